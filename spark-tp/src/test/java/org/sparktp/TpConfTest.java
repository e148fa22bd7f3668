package org.sparktp;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.ObjectInputStream;
import java.io.ObjectOutputStream;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The known-key registry, the value checks and the resolved, serializable settings. */
class TpConfTest {

  @Test
  void anUnknownKeyIsAnErrorThatSuggestsTheNearestKnownKey() {
    assertThatThrownBy(() -> TpConf.check("spark.tp.comm.timout", "5s"))
        .hasMessage("Unknown setting spark.tp.comm.timout; did you mean spark.tp.comm.timeout? (the spark.tp.* keys"
            + " are listed in docs/configuration.md)");
    assertThatThrownBy(() -> TpConf.check("spark.tp.batchsize", "5"))
        .hasMessageStartingWith("Unknown setting spark.tp.batchsize; did you mean spark.tp.batch-size?");
    // keys outside spark.tp.* are not ours
    TpConf.check("spark.executor.memory", "1g");
  }

  @Test
  void everyKnownKeyIsFoundWithItsDefault() {
    assertThat(TpConf.knownKeys()).containsEntry(TpConf.COMM_TIMEOUT, "120s").containsEntry(TpConf.COMM_SHM, "auto")
        .containsEntry(TpConf.TEST_FAIL_RANK, "-1").doesNotContainKey("spark.tp.comm.timeout_DEFAULT");
    assertThat(TpConf.isKnown("spark.tp.comm.timeout")).isTrue();
    assertThat(TpConf.isKnown("spark.tp.comm")).isFalse();
    // a prefix family (a constant ending in '.', such as spark.tp.models.) makes every key under it known
    List<String> families = List.of("spark.tp.models.");
    assertThat(TpConf.isKnown("spark.tp.models.bert", java.util.Set.of(), families)).isTrue();
    assertThat(TpConf.isKnown("spark.tp.models.", java.util.Set.of(), families)).isFalse();
    assertThat(TpConf.isKnown("spark.tp.model.bert", java.util.Set.of(), families)).isFalse();
  }

  @Test
  void valuesAreParsedAndRangeChecked() {
    assertThatThrownBy(() -> TpConf.check(TpConf.COMM_TIMEOUT, "abc"))
        .hasMessage("Invalid duration for spark.tp.comm.timeout: 'abc' (use a positive number with a unit: 500ms, 30s,"
            + " 5m, 1h)");
    assertThatThrownBy(() -> TpConf.check(TpConf.COMM_CHUNK_BYTES, "1k"))
        .hasMessage("Invalid value for spark.tp.comm.chunk-bytes: '1k' (use a multiple of 4 bytes from 4k to 64m,"
            + " e.g. 1m)");
    assertThatThrownBy(() -> TpConf.check(TpConf.COMM_PORT_RANGE, "70000"))
        .hasMessageStartingWith("Invalid port range for spark.tp.comm.port-range: '70000'");
    assertThatThrownBy(() -> TpConf.check(TpConf.COMM_SHM, "yes"))
        .hasMessage("Invalid value for spark.tp.comm.shm: 'yes' (use auto or off)");
    assertThatThrownBy(() -> TpConf.check(TpConf.NULL_POLICY, "drop"))
        .hasMessage("Invalid value for spark.tp.null-policy: 'drop' (use error, skip or null)");
    assertThatThrownBy(() -> TpConf.check(TpConf.BATCH_SIZE, "0"))
        .hasMessage("Invalid value for spark.tp.batch-size: '0' (use an integer >= 1)");
    TpConf.check(TpConf.COMM_CHUNK_BYTES, "64m");
    TpConf.check(TpConf.COMM_PORT_RANGE, "40000-40100");
  }

  @Test
  void settingsResolveOptionsOverDefaultsAndTravelSerialized() throws Exception {
    TpSettings s = TpSettings.of(Map.of(TpConf.COMM_SHM, "off", TpConf.BATCH_SIZE, "17"));
    assertThat(s.get(TpConf.COMM_SHM)).isEqualTo("off");
    assertThat(s.getInt(TpConf.BATCH_SIZE, 1)).isEqualTo(17);
    assertThat(s.durationMillis(TpConf.COMM_TIMEOUT)).isEqualTo(120_000);
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    try (ObjectOutputStream out = new ObjectOutputStream(bytes)) {
      out.writeObject(s);
    }
    TpSettings back;
    try (ObjectInputStream in = new ObjectInputStream(new ByteArrayInputStream(bytes.toByteArray()))) {
      back = (TpSettings) in.readObject();
    }
    assertThat(back.asMap()).isEqualTo(s.asMap());
    assertThatThrownBy(() -> TpSettings.of(Map.of("spark.tp.comm.shmm", "off")))
        .hasMessageStartingWith("Unknown setting spark.tp.comm.shmm; did you mean spark.tp.comm.shm?");
  }

  @Test
  void theCommSettingsBecomeTcpOptionsWhoseDefaultsAndNamesAreTheKeys() {
    byte[] secret = new byte[32];
    new java.util.Random().nextBytes(secret);
    // the communicator holds plain values: its defaults and the setting names in its errors must be TpConf's
    org.sparktp.comm.tcp.TcpOptions d = TpConf.tcpOptions(secret, Map.of());
    assertThat(d.timeoutMillis()).isEqualTo(TpConf.parseDurationMillis(TpConf.COMM_TIMEOUT,
        TpConf.COMM_TIMEOUT_DEFAULT));
    assertThat((long) d.chunkBytes()).isEqualTo(TpConf.parseBytes(TpConf.COMM_CHUNK_BYTES,
        TpConf.COMM_CHUNK_BYTES_DEFAULT));
    assertThat(d.shm()).isEqualTo(TpConf.COMM_SHM_DEFAULT.equals("auto"));
    assertThat(org.sparktp.comm.AbstractCommunicator.TIMEOUT_SETTING).isEqualTo(TpConf.COMM_TIMEOUT);
    assertThat(org.sparktp.comm.tcp.TcpOptions.CHUNK_BYTES_SETTING).isEqualTo(TpConf.COMM_CHUNK_BYTES);
    assertThat(org.sparktp.comm.tcp.TcpOptions.PORT_RANGE_SETTING).isEqualTo(TpConf.COMM_PORT_RANGE);

    org.sparktp.comm.tcp.TcpOptions o = TpConf.tcpOptions(secret, Map.of(TpConf.COMM_TIMEOUT, "1500ms",
        TpConf.COMM_CHUNK_BYTES, "64k", TpConf.COMM_SHM, " OFF "));
    assertThat(o.timeoutMillis()).isEqualTo(1500);
    assertThat(o.chunkBytes()).isEqualTo(64 << 10);
    assertThat(o.shm()).isFalse();
    assertThat(TpConf.tcpOptions(secret, Map.of(TpConf.COMM_SHM, "auto")).shm()).isTrue();
    assertThatThrownBy(() -> TpConf.tcpOptions(secret, Map.of(TpConf.COMM_SHM, "yes")))
        .hasMessage("Invalid value for spark.tp.comm.shm: 'yes' (use auto or off)");
    assertThatThrownBy(() -> TpConf.tcpOptions(secret, Map.of(TpConf.COMM_CHUNK_BYTES, "128m")))
        .hasMessage("Invalid value for spark.tp.comm.chunk-bytes: '128m' (use a multiple of 4 bytes from 4k to 64m,"
            + " e.g. 1m)");
    assertThatThrownBy(() -> TpConf.tcpOptions(secret, Map.of(TpConf.COMM_TIMEOUT, "abc")))
        .hasMessageStartingWith("Invalid duration for spark.tp.comm.timeout: 'abc'");
  }
}
