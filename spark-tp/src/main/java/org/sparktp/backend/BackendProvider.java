package org.sparktp.backend;

import java.util.Map;

/**
 * A backend kind found through {@link java.util.ServiceLoader} ({@code META-INF/services/org.sparktp.backend
 * .BackendProvider}), as DJL's {@code EngineProvider}: a name ({@code spark.tp.backend}), a priority (the order of
 * {@code auto}) and a probe ({@link #unavailableReason(int)}). {@link Backends} chooses among them; nothing else
 * constructs a backend.
 */
public interface BackendProvider {
  /** The name used by {@code spark.tp.backend}: {@code cpu}, {@code cuda}, ... */
  String name();

  /** Higher is preferred when {@code spark.tp.backend=auto}. */
  int priority();

  /** Null when this backend can run in this process, else why not (which library is missing, where it looked). */
  String unavailableReason();

  /**
   * Null when this backend can run on {@code device} (the task's device ordinal, from its Spark resources, or -1
   * when the task has none), else why not. This default ignores the device (a host backend).
   */
  default String unavailableReason(int device) {
    return unavailableReason();
  }

  /**
   * A new backend; {@code settings} are the resolved {@code spark.tp.*} values (key to value, missing keys take
   * their defaults), {@code device} the task's device ordinal or -1.
   */
  Backend create(Map<String, String> settings, int device);
}
