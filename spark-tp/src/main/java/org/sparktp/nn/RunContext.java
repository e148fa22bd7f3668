package org.sparktp.nn;

import java.util.function.Consumer;
import org.sparktp.backend.Backend;
import org.sparktp.comm.Communicator;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * What a layer needs to run on one rank: its backend, its group's communicator, timers, and the storage type
 * of the activations handed from op to op ({@link #activationDtype}, {@code spark.tp.activation-dtype}).
 */
public final class RunContext {
  private final Backend backend;
  private final Communicator comm;
  private long computeNanos;
  private long attentionNanos;
  // --- issue 12: generation ---
  private DecodeStep decode;
  // --- issue 9b: activation dtype ---
  private DType activationDtype = DType.F32;
  private Consumer<DistTensor> boundaryObserver;

  public RunContext(Backend backend, Communicator comm) {
    this.backend = backend;
    this.comm = comm;
  }

  public Backend backend() {
    return backend;
  }

  public Communicator comm() {
    return comm;
  }

  public int rank() {
    return comm.rank();
  }

  public int size() {
    return comm.size();
  }

  /** Time spent in local compute (GEMMs and elementwise work) so far. */
  public long computeNanos() {
    return computeNanos;
  }

  /** Time spent in attention cores (RoPE, scores, softmax, weighted values; not the projections), a part of compute. */
  public long attentionNanos() {
    return attentionNanos;
  }

  /** Adds attention-core time (also counted as compute by the caller). */
  public void addAttention(long nanos) {
    attentionNanos += nanos;
  }

  /** Adds local compute time (ops call it around their kernels). */
  public void addCompute(long nanos) {
    computeNanos += nanos;
  }

  // --- issue 12: generation ---

  /** The KV caches and sampling state of the generation step being run, or null outside generation. */
  public DecodeStep decode() {
    return decode;
  }

  /** Sets (or clears, with null) the generation step the next forward pass runs. */
  public void decode(DecodeStep step) {
    this.decode = step;
  }

  // --- issue 9b: activation dtype ---

  /** The storage type of the activations between ops (f32 unless set). */
  public DType activationDtype() {
    return activationDtype;
  }

  /**
   * Sets the storage type of the activations between ops: f32, bf16 or f16. A backend that holds no tensors of
   * that type ({@link Backend#supports}) keeps f32.
   */
  public RunContext activationDtype(DType dtype) {
    if (dtype == null || !(dtype == DType.F32 || dtype.isHalf())) {
      throw new IllegalArgumentException("Activations are stored as f32, bf16 or f16, not " + dtype);
    }
    this.activationDtype = backend.supports(dtype) ? dtype : DType.F32;
    return this;
  }

  /** Called with every activation {@link #store} hands on (tests observe the dtype at op boundaries). */
  public void observeBoundaries(Consumer<DistTensor> observer) {
    this.boundaryObserver = observer;
  }

  /**
   * An op's output as it is handed to the next op: rounded once (to nearest even) to {@link #activationDtype}.
   * A partial sum is kept as it is (f32): it is reduced in f32 and rounded after the reduction. Consumes
   * {@code x} (closes its local tensor when it returns a converted one).
   */
  public DistTensor store(DistTensor x) {
    DistTensor out = x;
    if (x.layout() != Layout.PARTIAL && x.local().dtype() != activationDtype) {
      out = convert(x, activationDtype);
    }
    if (boundaryObserver != null) {
      boundaryObserver.accept(out);
    }
    return out;
  }

  /** {@code x} in f32, for an op's kernel (exact); consumes {@code x} as {@link #store} does. */
  public DistTensor widen(DistTensor x) {
    return x.local().dtype() == DType.F32 ? x : convert(x, DType.F32);
  }

  private DistTensor convert(DistTensor x, DType dtype) {
    long t0 = System.nanoTime();
    Tensor c;
    try {
      c = backend.convert(x.local(), dtype);
    } catch (RuntimeException e) {
      x.close();
      throw e;
    }
    x.close();
    addCompute(System.nanoTime() - t0);
    return x.withLocal(c);
  }
}
