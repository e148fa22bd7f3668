package org.sparktp.comm;

/** A collective failed: a timeout, a dead or misbehaving peer, or an abort. */
public class CommunicatorException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public CommunicatorException(String message) {
    super(message);
  }

  public CommunicatorException(String message, Throwable cause) {
    super(message, cause);
  }
}
