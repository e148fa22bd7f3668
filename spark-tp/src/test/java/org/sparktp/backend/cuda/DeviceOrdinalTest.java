package org.sparktp.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

/** The GPU a task takes: Spark's addresses mapped through CUDA_VISIBLE_DEVICES, and duplicate GPUs refused. */
class DeviceOrdinalTest {

  @Test
  void withoutCudaVisibleDevicesTheAddressIsTheOrdinal() {
    assertThat(DeviceOrdinal.resolve(new String[] {"3"}, null, 8)).isEqualTo(3);
    assertThat(DeviceOrdinal.resolve(new String[] {" 0 "}, "", 1)).isEqualTo(0);
  }

  @Test
  void withCudaVisibleDevicesTheAddressIsItsPositionInTheList() {
    // getGpusResources.sh reports the entries of CUDA_VISIBLE_DEVICES; CUDA numbers them 0, 1, ...
    assertThat(DeviceOrdinal.resolve(new String[] {"6"}, "4,6,7", 3)).isEqualTo(1);
    assertThat(DeviceOrdinal.resolve(new String[] {"7", "4"}, "4, 6, 7", 3)).isEqualTo(2);
    assertThat(DeviceOrdinal.resolve(new String[] {"GPU-8a1b"}, "GPU-77ff,GPU-8a1b", 2)).isEqualTo(1);
  }

  @Test
  void aTaskWithoutAGpuOrWithAnAddressCudaCannotSeeFailsWithTheSettingToChange() {
    assertThatThrownBy(() -> DeviceOrdinal.resolve(new String[0], null, 1))
        .hasMessageContaining("This task has no GPU")
        .hasMessageContaining("spark.task.resource.gpu.amount=1");
    assertThatThrownBy(() -> DeviceOrdinal.resolve(new String[] {"2"}, "0,1", 2))
        .hasMessageContaining("The task's GPU address '2' is not in the executor's CUDA_VISIBLE_DEVICES=0,1")
        .hasMessageContaining("spark.executor.resource.gpu.discoveryScript");
    assertThatThrownBy(() -> DeviceOrdinal.resolve(new String[] {"4"}, null, 2))
        .hasMessage("The task's GPU address '4' maps to device 4 but CUDA sees 2 device(s)");
    assertThatThrownBy(() -> DeviceOrdinal.resolve(new String[] {"GPU-8a1b"}, null, 2))
        .hasMessageContaining("is not a device index and CUDA_VISIBLE_DEVICES is unset");
  }

  @Test
  void twoRanksOnOneGpuAreRefusedNamingTheSetting() {
    DeviceOrdinal.checkDistinct(new String[] {"hostA/GPU-1", "hostA/GPU-2", "hostB/GPU-1"});
    assertThatThrownBy(() -> DeviceOrdinal.checkDistinct(new String[] {"hostA/GPU-1", "hostB/GPU-1", "hostA/GPU-1"}))
        .hasMessageContaining("Ranks 0 and 2 of a tensor-parallel group got the same GPU (hostA/GPU-1)")
        .hasMessageContaining("spark.task.resource.gpu.amount=1")
        .hasMessageContaining("spark.tp.comm.transport=tcp");
  }
}
