package org.sparktp.comm.tcp;

import java.util.Map;
import org.sparktp.TpConf;

/**
 * Settings of a {@link TcpCommunicator}: the shared secret that peers prove with HMAC-SHA256, the bound
 * on every wait, the frame (chunk) size, and a tag that binds the handshake to one group (two groups
 * that share a secret cannot join each other). Immutable; the {@code with*} methods return copies.
 */
public final class TcpOptions {
  /** Smallest chunk accepted; smaller chunks only add per-frame overhead. */
  public static final int MIN_CHUNK_BYTES = 4096;
  /** Largest chunk accepted (one frame must fit an int, and a rank holds a few chunks of scratch). */
  public static final int MAX_CHUNK_BYTES = 64 << 20;

  private final byte[] secret;
  private final long timeoutMillis;
  private final int chunkBytes;
  private final String tag;
  private final boolean shm;

  private TcpOptions(byte[] secret, long timeoutMillis, int chunkBytes, String tag, boolean shm) {
    this.secret = secret;
    this.timeoutMillis = timeoutMillis;
    this.chunkBytes = chunkBytes;
    this.tag = tag;
    this.shm = shm;
  }

  /** Defaults ({@link TpConf#COMM_TIMEOUT_DEFAULT}, {@link TpConf#COMM_CHUNK_BYTES_DEFAULT}) with this secret. */
  public static TcpOptions withSecret(byte[] secret) {
    if (secret == null || secret.length < 16) {
      throw new IllegalArgumentException("The communicator needs a shared secret of at least 16 bytes, got "
          + (secret == null ? "none" : secret.length + " bytes"));
    }
    return new TcpOptions(secret.clone(),
        TpConf.parseDurationMillis(TpConf.COMM_TIMEOUT, TpConf.COMM_TIMEOUT_DEFAULT),
        (int) TpConf.parseBytes(TpConf.COMM_CHUNK_BYTES, TpConf.COMM_CHUNK_BYTES_DEFAULT), "",
        parseShm(TpConf.COMM_SHM_DEFAULT));
  }

  /** Applies {@code spark.tp.comm.*} keys present in {@code conf} (other keys are ignored). */
  public TcpOptions withConf(Map<String, String> conf) {
    TcpOptions o = this;
    String t = conf.get(TpConf.COMM_TIMEOUT);
    if (t != null) {
      o = o.withTimeoutMillis(TpConf.parseDurationMillis(TpConf.COMM_TIMEOUT, t));
    }
    String c = conf.get(TpConf.COMM_CHUNK_BYTES);
    if (c != null) {
      long bytes = TpConf.parseBytes(TpConf.COMM_CHUNK_BYTES, c);
      if (bytes > MAX_CHUNK_BYTES) {
        throw new IllegalArgumentException(TpConf.COMM_CHUNK_BYTES + " = " + c + " exceeds the largest chunk, "
            + MAX_CHUNK_BYTES + " bytes");
      }
      o = o.withChunkBytes((int) bytes);
    }
    String m = conf.get(TpConf.COMM_SHM);
    if (m != null) {
      o = o.withShm(parseShm(m));
    }
    return o;
  }

  private static boolean parseShm(String v) {
    String s = v.trim().toLowerCase(java.util.Locale.ROOT);
    if (s.equals("auto")) {
      return true;
    }
    if (s.equals("off")) {
      return false;
    }
    throw new IllegalArgumentException(TpConf.COMM_SHM + " must be 'auto' or 'off', got '" + v + "'");
  }

  /**
   * {@code true} ({@code auto}): ranks that are all on one host move data through shared memory, the TCP
   * connections only carry the handshake and failure detection; {@code false} ({@code off}): TCP only.
   */
  public TcpOptions withShm(boolean enabled) {
    return new TcpOptions(secret, timeoutMillis, chunkBytes, tag, enabled);
  }

  public boolean shm() {
    return shm;
  }

  public TcpOptions withTimeoutMillis(long millis) {
    if (millis <= 0) {
      throw new IllegalArgumentException("Communication timeout must be positive, got " + millis + " ms ("
          + TpConf.COMM_TIMEOUT + ")");
    }
    return new TcpOptions(secret, millis, chunkBytes, tag, shm);
  }

  public TcpOptions withChunkBytes(int bytes) {
    if (bytes < MIN_CHUNK_BYTES || bytes > MAX_CHUNK_BYTES || bytes % 4 != 0) {
      throw new IllegalArgumentException("Chunk size must be a multiple of 4 in [" + MIN_CHUNK_BYTES + ", "
          + MAX_CHUNK_BYTES + "] bytes, got " + bytes + " (" + TpConf.COMM_CHUNK_BYTES + ")");
    }
    return new TcpOptions(secret, timeoutMillis, bytes, tag, shm);
  }

  /** A label both sides must agree on (e.g. the stage attempt and group); it enters the HMAC. */
  public TcpOptions withTag(String tag) {
    return new TcpOptions(secret, timeoutMillis, chunkBytes, tag == null ? "" : tag, shm);
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
    return "TcpOptions{timeout=" + timeoutMillis + " ms, chunk=" + chunkBytes + " B, tag='" + tag + "', shm=" + (shm ? "auto" : "off") + ", secret="
        + secret.length + " bytes}";
  }
}
