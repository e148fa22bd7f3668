package org.sparktp.backend;
/** A backend kind found through java.util.ServiceLoader (META-INF/services/org.sparktp.backend.BackendProvider). */
public interface BackendProvider {
  /** The name used by spark.tp.backend: "cpu", "cuda", ... */
  String name();
  /** Higher is preferred when spark.tp.backend=auto. */
  int priority();
  /** null when this backend can run in this process, else why not (which library is missing, where it looked). */
  String unavailableReason();
  /** A new backend; settings are the resolved spark.tp.* values (key -> value), device is a device ordinal or -1. */
  Backend create(java.util.Map<String, String> settings, int device);
}
