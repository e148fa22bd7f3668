package org.sparktp.spark;

import java.io.Serializable;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkContext;
import org.apache.spark.SparkEnv;

/**
 * The shared secret with which the ranks of a tensor-parallel group authenticate each other (HMAC-SHA256
 * challenge–response, see {@code org.sparktp.comm.tcp.Handshake}). Made on the driver with
 * {@link #forJob(SparkContext)} and shipped to the tasks in their closure; resolved on the executor by
 * {@link #resolve()}.
 *
 * <ul>
 *   <li>With {@code spark.authenticate=true} the ranks use Spark's own application secret, the one
 *       that authenticates Spark's RPC: {@code spark.authenticate.secret} on standalone clusters, a
 *       secret Spark generates per application on YARN, Kubernetes and in local mode. Nothing secret is
 *       put in the closure: each task reads it from its executor's {@code SecurityManager}.</li>
 *   <li>Otherwise a random 256-bit secret is made per job and travels in the task closure. It keeps
 *       strangers and other jobs out of the group, but anyone who can read Spark's unencrypted RPC can
 *       read it too: turn on {@code spark.authenticate} (and {@code spark.network.crypto.enabled}) on
 *       untrusted networks.</li>
 * </ul>
 *
 * {@link #toString()} never shows the secret.
 */
public final class CommSecret implements Serializable {
  private static final long serialVersionUID = 1L;
  private static final SecureRandom RANDOM = new SecureRandom();

  private final byte[] random; // null: use Spark's authentication secret

  private CommSecret(byte[] random) {
    this.random = random;
  }

  /** On the driver: Spark's secret if {@code spark.authenticate} is on, else a fresh random secret. */
  public static CommSecret forJob(SparkContext sc) {
    return forJob(sc.getConf());
  }

  /** As {@link #forJob(SparkContext)}, from the driver's conf. */
  public static CommSecret forJob(SparkConf conf) {
    if (conf.getBoolean("spark.authenticate", false)) {
      return new CommSecret(null);
    }
    byte[] b = new byte[32];
    RANDOM.nextBytes(b);
    return new CommSecret(b);
  }

  /** A given secret (tools, tests); at least 16 bytes. */
  public static CommSecret of(byte[] secret) {
    if (secret == null || secret.length < 16) {
      throw new IllegalArgumentException("A communication secret needs at least 16 bytes");
    }
    return new CommSecret(secret.clone());
  }

  /** True when the ranks use Spark's authentication secret. */
  public boolean usesSparkAuthentication() {
    return random == null;
  }

  /** The key for the communicator, on an executor (or the driver). */
  public byte[] resolve() {
    if (random != null) {
      return random.clone();
    }
    SparkEnv env = SparkEnv.get();
    if (env == null) {
      throw new IllegalStateException("spark.authenticate is on, but there is no SparkEnv here to read the secret "
          + "from: resolve() must run inside a Spark task");
    }
    String s = env.securityManager().getSecretKey();
    if (s == null || s.isEmpty()) {
      s = env.conf().get("spark.authenticate.secret", null);
    }
    if (s == null || s.isEmpty()) {
      throw new IllegalStateException("spark.authenticate is on, but this executor has no authentication secret "
          + "(set spark.authenticate.secret, or let the cluster manager generate one)");
    }
    return derive(s);
  }

  /**
   * The communicator's key derived from Spark's secret, SHA-256("spark-tp comm key\0" + secret): any
   * length of Spark secret gives a 32-byte key, and the key is never Spark's RPC secret itself.
   */
  static byte[] derive(String sparkSecret) {
    try {
      MessageDigest md = MessageDigest.getInstance("SHA-256");
      md.update("spark-tp comm key\0".getBytes(StandardCharsets.UTF_8));
      md.update(sparkSecret.getBytes(StandardCharsets.UTF_8));
      return md.digest();
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("SHA-256 is not available in this JVM", e);
    }
  }

  @Override
  public String toString() {
    return random == null ? "CommSecret(spark.authenticate)" : "CommSecret(random per job)";
  }
}
