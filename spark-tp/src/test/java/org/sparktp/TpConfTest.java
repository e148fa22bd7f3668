package org.sparktp;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.charset.StandardCharsets;
import java.util.Map;
import org.apache.spark.SparkConf;
import org.junit.jupiter.api.Test;
import org.sparktp.comm.tcp.TcpOptions;
import org.sparktp.spark.CommSecret;

/** Parsing of the spark.tp.comm.* keys, and the secret made on the driver. */
class TpConfTest {
  private static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes(StandardCharsets.UTF_8);

  @Test
  void durationsAcceptUnitsAndABareNumberIsSeconds() {
    assertThat(TpConf.parseDurationMillis("k", "500ms")).isEqualTo(500);
    assertThat(TpConf.parseDurationMillis("k", "30s")).isEqualTo(30_000);
    assertThat(TpConf.parseDurationMillis("k", " 5m ")).isEqualTo(300_000);
    assertThat(TpConf.parseDurationMillis("k", "2min")).isEqualTo(120_000);
    assertThat(TpConf.parseDurationMillis("k", "1h")).isEqualTo(3_600_000);
    assertThat(TpConf.parseDurationMillis("k", "90")).isEqualTo(90_000);
    assertThat(TpConf.parseDurationMillis(TpConf.COMM_TIMEOUT, TpConf.COMM_TIMEOUT_DEFAULT)).isEqualTo(120_000);
    assertThatThrownBy(() -> TpConf.parseDurationMillis(TpConf.COMM_TIMEOUT, "soon"))
        .hasMessageContaining("Invalid duration for spark.tp.comm.timeout: 'soon'");
    assertThatThrownBy(() -> TpConf.parseDurationMillis(TpConf.COMM_TIMEOUT, "0s")).hasMessageContaining("positive");
  }

  @Test
  void sizesAcceptBinaryUnits() {
    assertThat(TpConf.parseBytes("k", "4096")).isEqualTo(4096);
    assertThat(TpConf.parseBytes("k", "512k")).isEqualTo(512 << 10);
    assertThat(TpConf.parseBytes("k", "1m")).isEqualTo(1 << 20);
    assertThat(TpConf.parseBytes("k", "1MB")).isEqualTo(1 << 20);
    assertThatThrownBy(() -> TpConf.parseBytes(TpConf.COMM_CHUNK_BYTES, "big"))
        .hasMessageContaining("spark.tp.comm.chunk-bytes");
  }

  @Test
  void optionsTakeTheKeysFromAConfAndCheckThem() {
    TcpOptions o = TcpOptions.withSecret(SECRET);
    assertThat(o.timeoutMillis()).isEqualTo(120_000);
    assertThat(o.chunkBytes()).isEqualTo(1 << 20);
    TcpOptions c = o.withConf(Map.of(TpConf.COMM_TIMEOUT, "45s", TpConf.COMM_CHUNK_BYTES, "256k", "other", "x"));
    assertThat(c.timeoutMillis()).isEqualTo(45_000);
    assertThat(c.chunkBytes()).isEqualTo(256 << 10);
    assertThat(c.toString()).doesNotContain("0123456789");
    assertThatThrownBy(() -> o.withConf(Map.of(TpConf.COMM_CHUNK_BYTES, "1g"))).hasMessageContaining("exceeds");
    assertThatThrownBy(() -> o.withChunkBytes(1000)).hasMessageContaining("multiple of 4");
    assertThatThrownBy(() -> TcpOptions.withSecret(new byte[4])).hasMessageContaining("at least 16 bytes");
  }

  @Test
  void theDriverMakesAFreshRandomSecretPerJobUnlessSparkAuthenticationIsOn() {
    CommSecret a = CommSecret.forJob(new SparkConf(false));
    CommSecret b = CommSecret.forJob(new SparkConf(false));
    assertThat(a.usesSparkAuthentication()).isFalse();
    assertThat(a.resolve()).hasSize(32).isNotEqualTo(b.resolve());
    assertThat(a.toString()).isEqualTo("CommSecret(random per job)");
    CommSecret spark = CommSecret.forJob(new SparkConf(false).set("spark.authenticate", "true")
        .set("spark.authenticate.secret", "cluster secret"));
    assertThat(spark.usesSparkAuthentication()).isTrue();
    assertThat(spark.toString()).doesNotContain("cluster secret");
    // Outside a task there is no SparkEnv to read Spark's secret from: the error says so.
    assertThatThrownBy(spark::resolve).hasMessageContaining("must run inside a Spark task");
  }
}
