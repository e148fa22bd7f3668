package org.sparktp.comm.tcp;

import org.sparktp.comm.AbstractCommunicator;

/**
 * Settings of a {@link TcpCommunicator}: the shared secret that peers prove with HMAC-SHA256, the bound
 * on every wait, the frame (chunk) size, the shared-memory path, and a tag that binds the handshake to one group (two
 * groups that share a secret cannot join each other). Immutable; the {@code with*} methods return copies. Plain
 * values: the {@code spark.tp.comm.*} settings are read by {@code TpConf.tcpOptions}.
 */
public final class TcpOptions {
  /** Smallest chunk accepted; smaller chunks only add per-frame overhead. */
  public static final int MIN_CHUNK_BYTES = 4096;
  /** Largest chunk accepted (one frame must fit an int, and a rank holds a few chunks of scratch). */
  public static final int MAX_CHUNK_BYTES = 64 << 20;
  /** The default bound on every wait (that of {@code spark.tp.comm.timeout}). */
  public static final long DEFAULT_TIMEOUT_MILLIS = 120_000;
  /** The default chunk (that of {@code spark.tp.comm.chunk-bytes}). */
  public static final int DEFAULT_CHUNK_BYTES = 1 << 20;
  /** Shared memory is used by default where every rank is on one host (that of {@code spark.tp.comm.shm}). */
  public static final boolean DEFAULT_SHM = true;
  /**
   * All-reduces of at most this many bytes run in one shot (every rank sends its whole buffer to every peer and sums
   * them locally in rank order: one exchange instead of the ring's {@code 2(p-1)} steps), the small all-reduces of
   * decode; larger ones run the bandwidth-optimal ring (TCP) or reduce-scatter rounds (shared memory).
   */
  public static final int DEFAULT_ONE_SHOT_BYTES = 64 << 10;
  /** The setting of the chunk size, named in errors. */
  public static final String CHUNK_BYTES_SETTING = "spark.tp.comm.chunk-bytes";
  /** The setting of the ports a rank listens on, named in errors. */
  public static final String PORT_RANGE_SETTING = "spark.tp.comm.port-range";

  private final byte[] secret;
  private final long timeoutMillis;
  private final int chunkBytes;
  private final String tag;
  private final boolean shm;
  private final int oneShotBytes;

  private TcpOptions(byte[] secret, long timeoutMillis, int chunkBytes, String tag, boolean shm, int oneShotBytes) {
    this.secret = secret;
    this.timeoutMillis = timeoutMillis;
    this.chunkBytes = chunkBytes;
    this.tag = tag;
    this.shm = shm;
    this.oneShotBytes = oneShotBytes;
  }

  /** The defaults with this secret. */
  public static TcpOptions withSecret(byte[] secret) {
    if (secret == null || secret.length < 16) {
      throw new IllegalArgumentException("The communicator needs a shared secret of at least 16 bytes, got "
          + (secret == null ? "none" : secret.length + " bytes"));
    }
    return new TcpOptions(secret.clone(), DEFAULT_TIMEOUT_MILLIS, DEFAULT_CHUNK_BYTES, "", DEFAULT_SHM,
        DEFAULT_ONE_SHOT_BYTES);
  }

  /**
   * {@code true} ({@code auto}): ranks that are all on one host move data through shared memory, the TCP
   * connections only carry the handshake and failure detection; {@code false} ({@code off}): TCP only.
   */
  public TcpOptions withShm(boolean enabled) {
    return new TcpOptions(secret, timeoutMillis, chunkBytes, tag, enabled, oneShotBytes);
  }

  public boolean shm() {
    return shm;
  }

  public TcpOptions withTimeoutMillis(long millis) {
    if (millis <= 0) {
      throw new IllegalArgumentException("Communication timeout must be positive, got " + millis + " ms ("
          + AbstractCommunicator.TIMEOUT_SETTING + ")");
    }
    return new TcpOptions(secret, millis, chunkBytes, tag, shm, oneShotBytes);
  }

  public TcpOptions withChunkBytes(int bytes) {
    if (bytes < MIN_CHUNK_BYTES || bytes > MAX_CHUNK_BYTES || bytes % 4 != 0) {
      throw new IllegalArgumentException("Chunk size must be a multiple of 4 in [" + MIN_CHUNK_BYTES + ", "
          + MAX_CHUNK_BYTES + "] bytes, got " + bytes + " (" + CHUNK_BYTES_SETTING + ")");
    }
    return new TcpOptions(secret, timeoutMillis, bytes, tag, shm, oneShotBytes);
  }

  /** A label both sides must agree on (e.g. the stage attempt and group); it enters the HMAC. */
  public TcpOptions withTag(String tag) {
    return new TcpOptions(secret, timeoutMillis, chunkBytes, tag == null ? "" : tag, shm, oneShotBytes);
  }

  /**
   * All-reduces of at most {@code bytes} (of float32: bf16/f16 ones are widened first) run in one shot
   * ({@link #DEFAULT_ONE_SHOT_BYTES}); 0 runs every all-reduce on the ring. Over shared memory, at most one chunk.
   */
  public TcpOptions withOneShotBytes(int bytes) {
    if (bytes < 0) {
      throw new IllegalArgumentException("The one-shot all-reduce bound must be at least 0 bytes, got " + bytes);
    }
    return new TcpOptions(secret, timeoutMillis, chunkBytes, tag, shm, bytes);
  }

  public int oneShotBytes() {
    return oneShotBytes;
  }

  byte[] secret() {
    return secret;
  }

  public long timeoutMillis() {
    return timeoutMillis;
  }

  public int chunkBytes() {
    return chunkBytes;
  }

  public String tag() {
    return tag;
  }

  @Override
  public String toString() {
    // Never prints the secret.
    return "TcpOptions{timeout=" + timeoutMillis + " ms, chunk=" + chunkBytes + " B, tag='" + tag + "', shm="
        + (shm ? "auto" : "off") + ", one-shot<=" + oneShotBytes + " B, secret=" + secret.length + " bytes}";
  }
}
