package org.sparktp.kernel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class KernelSpecTest {
  @TempDir
  Path tmp;

  @Test
  void theUserDataDirIsWhereJupyterKernelspecInstallUserPutsIt() {
    Path home = Path.of("/home/ann");
    assertThat(KernelSpec.userDataDir(Map.of("JUPYTER_DATA_DIR", "/data/j"), "Linux", home)).isEqualTo(Path.of("/data/j"));
    assertThat(KernelSpec.userDataDir(Map.of(), "Linux", home)).isEqualTo(Path.of("/home/ann/.local/share/jupyter"));
    assertThat(KernelSpec.userDataDir(Map.of("XDG_DATA_HOME", "/x"), "Linux", home)).isEqualTo(Path.of("/x/jupyter"));
    assertThat(KernelSpec.userDataDir(Map.of(), "Mac OS X", home)).isEqualTo(Path.of("/home/ann/Library/Jupyter"));
  }

  @Test
  void writesAKernelJsonThatStartsTheKernelWithAnAbsoluteClassPath() throws Exception {
    Path dir = KernelSpec.write(tmp, "/opt/java/bin/java", "rel/classes:/abs/a.jar", "/repo/conf/log4j2.properties");
    assertThat(dir).isEqualTo(tmp.resolve("kernels/spark-tp"));
    JsonObject spec = JsonParser.parseString(Files.readString(dir.resolve("kernel.json"))).getAsJsonObject();
    List<String> argv = spec.getAsJsonArray("argv").asList().stream().map(e -> e.getAsString()).toList();
    assertThat(argv.get(0)).isEqualTo("/opt/java/bin/java");
    assertThat(argv).contains("-Dlog4j2.configurationFile=/repo/conf/log4j2.properties",
        "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED");
    int cp = argv.indexOf("-cp");
    assertThat(argv.get(cp + 1)).isEqualTo(Path.of("rel/classes").toAbsolutePath() + ":/abs/a.jar");
    assertThat(argv.subList(cp + 2, argv.size())).containsExactly(SparkTpKernel.class.getName(), "{connection_file}");
    assertThat(spec.get("display_name").getAsString()).isEqualTo("spark-tp (Java)");
    assertThat(spec.get("language").getAsString()).isEqualTo("java");
    assertThat(spec.getAsJsonObject("env").get("SPARK_LOCAL_IP").getAsString()).isEqualTo("127.0.0.1");
    assertThat(Files.list(dir).map(p -> p.getFileName().toString()).toList()).containsExactly("kernel.json");
    assertThatThrownBy(() -> KernelSpec.write(tmp, "java", " ", null)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("needs a class path");
  }
}
