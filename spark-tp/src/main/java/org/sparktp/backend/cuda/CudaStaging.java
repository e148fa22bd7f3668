package org.sparktp.backend.cuda;

import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;

/**
 * The CUDA backend's host transfers: host-to-device copies run on their own stream through a ring of pinned staging
 * buffers of {@code spark.tp.cuda.staging-bytes}, and the compute stream waits on an event after each upload, so an
 * upload issued while earlier GEMMs run overlaps them; downloads run on a third stream after an event from compute.
 */
final class CudaStaging {
  private final CudaBackend backend;
  private final long chunk;
  private CUstream_st h2d;
  private CUstream_st d2h;
  private CUevent_st computeMark;
  private CUevent_st copyMark;
  private Slot[] slots;
  private int next;
  private final java.util.concurrent.atomic.AtomicLongArray counts = new java.util.concurrent.atomic.AtomicLongArray(4);

  /** Fills pinned buffer {@code host} with {@code bytes} bytes starting {@code from} bytes into the source. */
  @FunctionalInterface
  interface Filler {
    void fill(long host, long from, long bytes);
  }

  /** A pinned host buffer and the event that marks its last copy done. */
  private static final class Slot {
    final long host;
    final CUevent_st done;
    boolean pending;

    Slot(long host, CUevent_st done) {
      this.host = host;
      this.done = done;
    }
  }

  /** Streams, events and two pinned buffers of {@code chunk} bytes; on a failure what was made is freed. */
  CudaStaging(CudaBackend backend, long chunk) {
    this.backend = backend;
    this.chunk = chunk;
    try {
      h2d = CudaBackend.stream("host-to-device");
      d2h = CudaBackend.stream("device-to-host");
      computeMark = CudaBackend.event();
      copyMark = CudaBackend.event();
      slots = new Slot[2];
      for (int i = 0; i < slots.length; i++) {
        PointerPointer<Pointer> pp = new PointerPointer<>(1);
        try {
          CudaCheck.cuda(cudart.cudaHostAlloc(pp, chunk, cudart.cudaHostAllocDefault),
              "cudaHostAlloc(" + chunk + " bytes)");
          slots[i] = new Slot(pp.get(0).address(), CudaBackend.event());
        } finally {
          pp.deallocate();
        }
      }
    } catch (RuntimeException | Error e) {
      RuntimeException r = release(null);
      if (r != null) {
        e.addSuppressed(r);
      }
      throw e;
    }
  }

  /** The ring's next slot, once the copy that last used it has finished. */
  private Slot nextSlot() {
    Slot s = slots[next];
    next = (next + 1) % slots.length;
    if (s.pending) {
      backend.check(cudart.cudaEventSynchronize(s.done), "cudaEventSynchronize(staging)");
    }
    return s;
  }

  /** Copies {@code bytes} from the host (through the staging ring) to {@code dst}; compute waits for it. */
  void copyIn(long dst, long bytes, Filler filler) {
    if (bytes == 0) {
      return;
    }
    counts.incrementAndGet(0);
    counts.addAndGet(1, bytes);
    // the destination was allocated (stream-ordered) on compute: the copy stream waits for that
    backend.check(cudart.cudaEventRecord(computeMark, backend.computeStream()), "cudaEventRecord(compute)");
    backend.check(cudart.cudaStreamWaitEvent(h2d, computeMark, 0), "cudaStreamWaitEvent(host-to-device)");
    for (long done = 0; done < bytes; ) {
      long n = Math.min(chunk, bytes - done);
      Slot s = nextSlot();
      filler.fill(s.host, done, n);
      backend.check(cudart.cudaMemcpyAsync(new Ptr(dst + done), new Ptr(s.host), n, cudart.cudaMemcpyHostToDevice, h2d),
          "cudaMemcpyAsync(host to device, " + n + " bytes)");
      backend.check(cudart.cudaEventRecord(s.done, h2d), "cudaEventRecord(staging)");
      s.pending = true;
      done += n;
    }
    backend.check(cudart.cudaEventRecord(copyMark, h2d), "cudaEventRecord(host-to-device)");
    backend.check(cudart.cudaStreamWaitEvent(backend.computeStream(), copyMark, 0), "cudaStreamWaitEvent(compute)");
  }

  /** Copies {@code bytes} from {@code src} to the host once the compute stream's work is done. */
  void copyOut(long src, long bytes, Filler drain) {
    if (bytes == 0) {
      return;
    }
    counts.incrementAndGet(2);
    counts.addAndGet(3, bytes);
    backend.check(cudart.cudaEventRecord(computeMark, backend.computeStream()), "cudaEventRecord(compute)");
    backend.check(cudart.cudaStreamWaitEvent(d2h, computeMark, 0), "cudaStreamWaitEvent(device-to-host)");
    for (long done = 0; done < bytes; ) {
      long n = Math.min(chunk, bytes - done);
      Slot s = nextSlot();
      backend.check(cudart.cudaMemcpyAsync(new Ptr(s.host), new Ptr(src + done), n, cudart.cudaMemcpyDeviceToHost, d2h),
          "cudaMemcpyAsync(device to host, " + n + " bytes)");
      backend.check(cudart.cudaEventRecord(s.done, d2h), "cudaEventRecord(staging)");
      backend.check(cudart.cudaEventSynchronize(s.done), "cudaEventSynchronize(device to host)");
      s.pending = false;
      drain.fill(s.host, done, n);
      done += n;
    }
  }

  /** Host-to-device copies, their bytes, device-to-host copies, their bytes, so far ({@link CudaBackend#transfers}). */
  long[] counts() {
    return new long[] {counts.get(0), counts.get(1), counts.get(2), counts.get(3)};
  }

  /** Fills from {@code src}'s bytes, counted from its position (absolute reads: {@code src} does not move). */
  static Filler bytes(java.nio.ByteBuffer src) {
    int base = src.position();
    return (host, from, n) -> new org.bytedeco.javacpp.BytePointer(new Ptr(host)).capacity(n).asByteBuffer()
        .put(src.slice(base + (int) from, (int) n));
  }

  /** Drains into {@code dst} from its position on (absolute writes: {@code dst} does not move). */
  static Filler drainBytes(java.nio.ByteBuffer dst) {
    int base = dst.position();
    return (host, from, n) -> dst.slice(base + (int) from, (int) n)
        .put(new org.bytedeco.javacpp.BytePointer(new Ptr(host)).capacity(n).asByteBuffer());
  }

  static Filler floats(float[] src, int offset) {
    return (host, from, n) -> new FloatPointer(new Ptr(host)).capacity(n / 4).put(src, offset + (int) (from / 4),
        (int) (n / 4));
  }

  static Filler ints(int[] src) {
    return (host, from, n) -> new IntPointer(new Ptr(host)).capacity(n / 4).put(src, (int) (from / 4), (int) (n / 4));
  }

  /** Frees the pinned buffers, events and streams; returns {@code first}, or the first failure of these. */
  RuntimeException release(RuntimeException first) {
    if (slots != null) {
      for (Slot s : slots) {
        if (s != null) {
          first = CudaBackend.keep(first, () -> CudaCheck.cuda(cudart.cudaEventSynchronize(s.done),
              "cudaEventSynchronize"));
          first = CudaBackend.keep(first, () -> CudaCheck.cuda(cudart.cudaFreeHost(new Ptr(s.host)), "cudaFreeHost"));
          cudart.cudaEventDestroy(s.done);
        }
      }
      slots = null;
    }
    for (CUevent_st e : new CUevent_st[] {computeMark, copyMark}) {
      if (e != null) {
        cudart.cudaEventDestroy(e);
      }
    }
    computeMark = null;
    copyMark = null;
    for (CUstream_st s : new CUstream_st[] {h2d, d2h}) {
      if (s != null) {
        first = CudaBackend.keep(first, () -> CudaCheck.cuda(cudart.cudaStreamDestroy(s), "cudaStreamDestroy"));
      }
    }
    h2d = null;
    d2h = null;
    return first;
  }
}
