package org.sparktp.comm.tcp;

/** {@link TcpFailureTest} with {@code spark.tp.comm.shm=off}: the same failures over TCP frames. */
class TcpOnlyFailureTest extends TcpFailureTest {
  @Override
  TcpOptions opts() {
    return TcpGroup.options().withShm(false);
  }
}
