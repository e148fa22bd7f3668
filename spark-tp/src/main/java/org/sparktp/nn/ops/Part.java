package org.sparktp.nn.ops;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.List;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.nn.LinearKernel;
import org.sparktp.backend.Tensor;

/**
 * A logical part of a linear's weight on disk: {@code Y_part = X W_part^T + b_part} with
 * {@code W_part} the output features {@code [offset, offset + out)} of {@code weight}. {@code weight}
 * is PyTorch's {@code nn.Linear} layout {@code [outTotal, in]}, or with {@code conv1d} GPT-2's
 * {@code Conv1D} layout {@code [in, outTotal]}. A fused tensor (GPT-2's {@code c_attn}
 * {@code [in, 3*hidden]}, a merged gate/up) is several parts of one tensor, each split on its own, as
 * vLLM's {@code QKVParallelLinear.weight_loader} does.
 *
 * @param bias the bias tensor {@code [outTotal]} or null
 */
public record Part(String weight, String bias, boolean conv1d, int offset, int out, int outTotal, int in)
    implements Serializable {

  /** A whole {@code nn.Linear} {@code [out, in]}. */
  public static Part linear(String weight, String bias, int out, int in) {
    return new Part(weight, bias, false, 0, out, out, in);
  }

  /** A whole GPT-2 {@code Conv1D} {@code [in, out]}. */
  public static Part conv1d(String weight, String bias, int out, int in) {
    return new Part(weight, bias, true, 0, out, out, in);
  }

  /** Column-parallel: the slices for output features {@code [start, start + count)} of this part. */
  List<Slice> columnSlices(int start, int count) {
    List<Slice> s = new ArrayList<>();
    s.add(conv1d ? Slice.columns(weight, offset + start, count, in, outTotal)
        : Slice.rows(weight, offset + start, count, outTotal, in));
    if (bias != null) {
      s.add(Slice.elements(bias, offset + start, count, outTotal));
    }
    return s;
  }

  /** Row-parallel: the slices for input features {@code [start, start + count)} (the whole bias). */
  List<Slice> rowSlices(int start, int count) {
    List<Slice> s = new ArrayList<>();
    s.add(conv1d ? Slice.rows(weight, start, count, in, outTotal) : Slice.columns(weight, start, count, outTotal, in));
    if (bias != null) {
      s.add(Slice.elements(bias, 0, outTotal, outTotal));
    }
    return s;
  }

  /** A column range of one part: output features {@code [start, start + count)} of {@code part}. */
  record Range(Part part, int start, int count) implements Serializable {}

  /**
   * Ranges merged where they are adjacent in the same tensor (GPT-2's {@code c_attn} on one rank: q, k and
   * v are one contiguous block), so that each block is read once.
   */
  static List<Range> merged(List<Range> ranges) {
    List<Range> out = new ArrayList<>();
    for (Range r : ranges) {
      Range last = out.isEmpty() ? null : out.get(out.size() - 1);
      if (last != null && last.part().weight().equals(r.part().weight())
          && java.util.Objects.equals(last.part().bias(), r.part().bias())
          && last.part().offset() + last.start() + last.count() == r.part().offset() + r.start()) {
        Part whole = new Part(last.part().weight(), last.part().bias(), last.part().conv1d(), 0,
            last.part().outTotal(), last.part().outTotal(), last.part().in());
        out.set(out.size() - 1, new Range(whole, last.part().offset() + last.start(), last.count() + r.count()));
      } else {
        out.add(r);
      }
    }
    return out;
  }

  /** The slices of column ranges (adjacent ones merged). */
  static List<Slice> columnSlices(List<Range> ranges) {
    List<Slice> s = new ArrayList<>();
    for (Range r : merged(ranges)) {
      s.addAll(r.part().columnSlices(r.start(), r.count()));
    }
    return s;
  }

  /**
   * A column-parallel kernel for several parts fused into one GEMM: its weight is the parts' blocks
   * stacked, {@code [sum count, in]} (GPT-2's Conv1D blocks transposed), built on the backend in the dtype
   * the blocks were read in (no heap copy; one block is taken as it is), then stored in the resolved dtype by
   * {@link Weights#linear}; its output is the parts' columns side by side. The bias (f32) is the parts'
   * biases side by side.
   */
  static LinearKernel columnKernel(List<Range> all, Weights w, Activation epilogue) {
    List<Range> ranges = merged(all);
    int in = ranges.get(0).part().in();
    int rows = 0;
    boolean anyBias = false;
    for (Range r : ranges) {
      rows += r.count();
      anyBias |= r.part().bias() != null;
    }
    Backend be = w.backend();
    float[] bt = anyBias ? new float[rows] : null;
    int row = 0;
    for (Range r : ranges) {
      if (r.part().bias() != null) {
        System.arraycopy(w.floats(r.part().columnSlices(r.start(), r.count()).get(1)), 0, bt, row, r.count());
      }
      row += r.count();
    }
    Tensor wt = null;
    Tensor bias = null;
    try {
      if (ranges.size() == 1 && !ranges.get(0).part().conv1d()) {
        Range r = ranges.get(0);
        wt = w.take(r.part().columnSlices(r.start(), r.count()).get(0));
      } else {
        row = 0;
        for (Range r : ranges) {
          Tensor block = w.take(r.part().columnSlices(r.start(), r.count()).get(0));
          try {
            if (wt == null) {
              wt = be.allocate(rows, in, block.dtype());
            }
            if (block.dtype() != wt.dtype()) {
              Tensor c = be.convert(block, wt.dtype());
              block.close();
              block = c;
            }
            be.copyRows(block, r.part().conv1d(), wt, row);
          } finally {
            block.close();
          }
          row += r.count();
        }
      }
      bias = bt == null ? null : be.upload(bt, 1, rows);
    } catch (RuntimeException e) {
      if (wt != null) {
        wt.close();
      }
      throw e;
    }
    return w.linear(wt, bias, epilogue);
  }

  /**
   * A row-parallel kernel for input features {@code [start, start + count)}: weight {@code [out, count]} (a
   * Conv1D block {@code [count, out]} transposed on the backend), the whole bias (f32).
   */
  LinearKernel rowKernel(int start, int count, Weights w) {
    List<Slice> sl = rowSlices(start, count);
    Backend be = w.backend();
    float[] bt = bias == null ? null : w.floats(sl.get(1));
    Tensor block = w.take(sl.get(0));
    Tensor wt = block;
    Tensor b = null;
    try {
      if (conv1d) {
        wt = null;
        try {
          wt = be.allocate(outTotal, count, block.dtype());
          be.copyRows(block, true, wt, 0);
        } finally {
          block.close();
        }
      }
      b = bt == null ? null : be.upload(bt, 1, outTotal);
    } catch (RuntimeException e) {
      if (wt != null && !wt.isClosed()) {
        wt.close();
      }
      throw e;
    }
    return w.linear(wt, b, null);
  }
}
