package org.sparktp.nn.ops;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.sparktp.backend.Backend;
import org.sparktp.nn.RankWeights;
import org.sparktp.tensor.Tensor;

/**
 * One rank's weight blocks ({@link RankWeights}, keyed by {@link Slice#id()}) and the tensors made
 * from them on its backend. Every tensor made here is owned here and closed by {@link #close()}; a
 * block used by two ops (tied weights) is uploaded once.
 */
public final class Weights implements AutoCloseable {
  private final RankWeights blocks;
  private final Backend backend;
  private final Map<String, Tensor> uploaded = new HashMap<>();
  private final List<Tensor> owned = new ArrayList<>();

  public Weights(RankWeights blocks, Backend backend) {
    this.blocks = blocks;
    this.backend = backend;
  }

  /** The host block of a slice. */
  public float[] host(Slice s) {
    return blocks.get(s.id()).data();
  }

  /** The slice's block on the backend, {@code [blockRows, blockCols]}; uploaded once. */
  public Tensor tensor(Slice s) {
    return uploaded.computeIfAbsent(s.id(), k -> own(backend.upload(host(s), s.blockRows(), s.blockCols())));
  }

  /** A tensor made from host data (a fused or transposed block); owned here. */
  public Tensor upload(float[] data, int rows, int cols) {
    return own(backend.upload(data, rows, cols));
  }

  private Tensor own(Tensor t) {
    owned.add(t);
    return t;
  }

  /** Bytes held on the backend. */
  public long bytes() {
    long b = 0;
    for (Tensor t : owned) {
      b += t.bytes(); // as stored (issue 9b: bf16 counts 2 bytes an element)
    }
    return b;
  }

  @Override
  public void close() {
    for (Tensor t : owned) {
      t.close();
    }
    owned.clear();
    uploaded.clear();
  }
}
