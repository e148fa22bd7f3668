package org.sparktp.backend.cuda;

/** A CUDA, cuBLASLt or NVRTC call failed: names the call, its status code and the library's error text. */
public class CudaException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  private final String call;
  private final int code;

  public CudaException(String call, int code, String text) {
    super(call + " failed: " + text + " (status " + code + ")");
    this.call = call;
    this.code = code;
  }

  /** The API call that failed, e.g. {@code cudaMallocAsync}. */
  public String call() {
    return call;
  }

  /** The status code it returned. */
  public int code() {
    return code;
  }
}
