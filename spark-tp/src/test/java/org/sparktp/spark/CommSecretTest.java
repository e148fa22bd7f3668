package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.util.List;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.Test;

/** With spark.authenticate on, the ranks use Spark's application secret, read in the task, never shipped. */
class CommSecretTest {

  @Test
  void withSparkAuthenticationTheTasksResolveSparksSecret() throws Exception {
    SparkConf conf = new SparkConf()
        .setMaster("local[1]")
        .setAppName("CommSecretTest")
        .set("spark.ui.enabled", "false")
        .set("spark.driver.host", "127.0.0.1")
        .set("spark.authenticate", "true")
        .set("spark.authenticate.secret", "the cluster's secret");
    try (JavaSparkContext jsc = new JavaSparkContext(conf)) {
      CommSecret secret = CommSecret.forJob(jsc.sc());
      assertThat(secret.usesSparkAuthentication()).isTrue();
      // The serialized secret object carries no secret bytes.
      java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
      try (java.io.ObjectOutputStream out = new java.io.ObjectOutputStream(bytes)) {
        out.writeObject(secret);
      }
      assertThat(bytes.toString(StandardCharsets.ISO_8859_1)).doesNotContain("the cluster's secret");
      List<String> got = jsc.parallelize(List.of(1), 1)
          .map(x -> java.util.HexFormat.of().formatHex(secret.resolve())).collect();
      // Spark's SecurityManager holds the application's secret: spark.authenticate.secret on standalone
      // clusters, one generated per application on YARN, Kubernetes and in local mode (as here).
      String sparks = org.apache.spark.SparkEnv.get().securityManager().getSecretKey();
      assertThat(sparks).isNotEmpty();
      // The key is derived from it (32 bytes, never Spark's RPC secret itself).
      assertThat(got).containsExactly(java.util.HexFormat.of().formatHex(CommSecret.derive(sparks)));
      assertThat(CommSecret.derive("short")).hasSize(32).isNotEqualTo(CommSecret.derive("shorT"));
    }
  }
}
