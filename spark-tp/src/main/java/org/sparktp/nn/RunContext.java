package org.sparktp.nn;

import org.sparktp.backend.Backend;
import org.sparktp.comm.Communicator;

/** What a layer needs to run on one rank: its backend, its group's communicator, and timers. */
public final class RunContext {
  private final Backend backend;
  private final Communicator comm;
  private long computeNanos;
  private long attentionNanos;
  // --- issue 12: generation ---
  private org.sparktp.nn.gen.DecodeStep decode;

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
  public org.sparktp.nn.gen.DecodeStep decode() {
    return decode;
  }

  /** Sets (or clears, with null) the generation step the next forward pass runs. */
  public void decode(org.sparktp.nn.gen.DecodeStep step) {
    this.decode = step;
  }
}
