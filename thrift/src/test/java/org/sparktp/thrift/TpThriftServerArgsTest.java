package org.sparktp.thrift;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Map;
import org.junit.jupiter.api.Test;

/** The launcher's command line: flags, defaults, and one line for each mistake. */
class TpThriftServerArgsTest {
  @Test
  void flagsAndDefaults() {
    TpThriftServer.Options o = TpThriftServer.parse(new String[] {"--master", "local[2]", "--port=0",
        "--conf", "spark.tp.models.mlp=/m", "--conf=spark.ui.enabled=false", "--host", "0.0.0.0"});
    assertThat(o.master()).isEqualTo("local[2]");
    assertThat(o.port()).isZero();
    assertThat(o.host()).isEqualTo("0.0.0.0");
    assertThat(o.confs()).isEqualTo(Map.of("spark.tp.models.mlp", "/m", "spark.ui.enabled", "false"));
    TpThriftServer.Options d = TpThriftServer.parse(new String[0]);
    assertThat(d.master()).as("bin/spark-tp's default master applies").isNull();
    assertThat(d.port()).isEqualTo(10000);
  }

  @Test
  void mistakesSayWhatIsWrong() {
    assertThatThrownBy(() -> TpThriftServer.parse(new String[] {"--port", "ten"}))
        .hasMessage("--port ten: not a port number (0..65535; 0 picks a free port)");
    assertThatThrownBy(() -> TpThriftServer.parse(new String[] {"--port", "70000"})).hasMessageContaining("0..65535");
    assertThatThrownBy(() -> TpThriftServer.parse(new String[] {"--conf", "spark.tp.models.mlp"}))
        .hasMessage("--conf spark.tp.models.mlp: expected key=value");
    assertThatThrownBy(() -> TpThriftServer.parse(new String[] {"--master"})).hasMessage("--master needs a value");
    assertThatThrownBy(() -> TpThriftServer.parse(new String[] {"--tp", "2"})).hasMessage("unknown argument '--tp'");
  }
}
