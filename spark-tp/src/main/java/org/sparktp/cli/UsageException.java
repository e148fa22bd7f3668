package org.sparktp.cli;

/** A wrong command line: the CLI prints the message and the usage, and exits with code 2. */
final class UsageException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  UsageException(String message) {
    super(message);
  }
}
