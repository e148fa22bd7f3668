package org.sparktp.backend;

import java.util.List;

/**
 * What a {@link Backend} computes, for {@code Backend.supports(op, dtype)}. Each op lists the
 * {@code Backend} methods whose default is generic ({@link #generic()}): it refuses with a clear error, or goes
 * through the host (download, Java, upload) and says so in the log ({@link Fallbacks}). A backend that says it runs
 * an op natively overrides those methods (the contract test checks it by reflection); the op's other methods are
 * abstract in {@code Backend} or compose ops that run natively.
 */
public enum BackendOp {
  /** {@code allocate}, {@code empty}. Generic: {@code allocate(rows, cols, dtype)}, f32 only. */
  ALLOCATE(true, "allocate(int,int,DType)"),
  /** {@code upload} of floats or of little-endian bytes. Generic: the bytes' form, f32 only. */
  UPLOAD(true, "upload(ByteBuffer,DType,int,int)"),
  /** {@code download} into floats or bytes. Generic: the bytes' form, f32 only. */
  DOWNLOAD(true, "download(Tensor,ByteBuffer)"),
  /** {@code write} of float rows or of bytes at an offset. Generic: the bytes' form, f32 only, whole rows. */
  WRITE(true, "write(Tensor,long,ByteBuffer)"),
  /** {@code zero}. */
  ZERO(true),
  /** {@code copyBlock} between tensors of one dtype. */
  COPY_BLOCK(true),
  /** {@code copyRows}: stacking and transposing weight blocks. Generic: one host copy. */
  COPY_ROWS(false, "copyRows(Tensor,boolean,Tensor,int)"),
  /** {@code selectRows}, composed of {@code copyBlock}. */
  SELECT_ROWS(true),
  /** {@code convert} to the dtype. Generic: f32 to f32 only, through the host. */
  CONVERT(false, "convert(Tensor,DType)"),
  /** {@code hostBuffer}: the tensor's memory seen from the host. Generic: refuses (a device backend). */
  HOST_BUFFER(false, "hostBuffer(Tensor)"),
  /** {@code accumulate}: host buffers summed in f32, the reduction of host communicators (generic: a Java loop). */
  ACCUMULATE(true),
  /** {@code gemm} with operands of the dtype. */
  GEMM(true),
  /**
   * {@code prepareLinear}, {@code kernel}: linears with weights stored in the dtype ({@code I8}: int8 weight-only).
   * Generic: f32 weights through {@code gemm} and {@code biasActivate}; int8 quantized and dequantized on the host.
   */
  LINEAR(true, "prepareLinear(Tensor,Tensor,Activation)", "prepareLinear(Tensor,Tensor,Activation,DType)"),
  /** {@code addBias}, {@code biasActivate} with a bias. */
  ADD_BIAS(true),
  /** {@code add}. */
  ADD(true),
  /** {@code activate}, {@code biasActivate}. */
  ACTIVATE(true),
  /** {@code layerNorm}. */
  LAYER_NORM(true),
  /** {@code rmsNorm}. Generic: through the host. */
  RMS_NORM(false, "rmsNorm(Tensor,Tensor,float)"),
  /** {@code embedding} from a table of the dtype. */
  EMBEDDING(true),
  /** {@code embeddingBag} from a table of the dtype. */
  EMBEDDING_BAG(true),
  /** {@code attention} over a ragged token batch. Generic: through the host. */
  ATTENTION(false, "attention(Tensor,int,int,int,int[],int,int[],boolean,float,Tensor)"),
  /** {@code rope}. Generic: through the host. */
  ROPE(false, "rope(Tensor,int,int,int,int[],float[])"),
  /** {@code swiglu}. Generic: through the host. */
  SWIGLU(false, "swiglu(Tensor,Tensor)"),
  /** {@code cachedAttention} against KV caches of the dtype. Generic: through the host. */
  CACHED_ATTENTION(false, "cachedAttention(Tensor,int,int,int,int[],int,int[],Tensor[],int[],float,Tensor)");

  private final boolean f32Generic;
  private final List<String> generic;

  BackendOp(boolean f32Generic, String... generic) {
    this.f32Generic = f32Generic;
    this.generic = List.of(generic);
  }

  /**
   * The {@code Backend} methods of this op whose default is generic, as {@code name(SimpleType,...)}: a backend
   * that runs the op natively overrides each.
   */
  public List<String> generic() {
    return generic;
  }

  /**
   * True when {@code Backend}'s generic code already runs this op on {@code F32} without the host (it composes
   * abstract methods), so that a backend needs an override only for the other dtypes it claims.
   */
  public boolean f32Generic() {
    return f32Generic;
  }

  /** {@code rope}, {@code cached_attention}, ...: as logs and messages name it. */
  public String id() {
    return name().toLowerCase(java.util.Locale.ROOT);
  }
}
