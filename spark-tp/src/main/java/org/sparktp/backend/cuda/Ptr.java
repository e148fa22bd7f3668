package org.sparktp.backend.cuda;

import org.bytedeco.javacpp.Pointer;

/**
 * A JavaCPP {@link Pointer} at a raw address (a device pointer or a handle); owns nothing and is never freed by
 * the garbage collector.
 */
public final class Ptr extends Pointer {
  public Ptr(long address) {
    this.address = address;
  }

  public static Pointer of(long address) {
    return address == 0 ? null : new Ptr(address);
  }
}
