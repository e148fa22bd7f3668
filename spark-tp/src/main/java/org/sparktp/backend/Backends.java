package org.sparktp.backend;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.ServiceLoader;
import java.util.function.Function;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The backend kinds on the class path ({@link BackendProvider}s found by {@link ServiceLoader}) and the one place
 * that chooses among them for {@code spark.tp.backend}: a provider's name, or {@code auto} (the highest priority
 * whose {@link BackendProvider#unavailableReason(int)} is null for the task's device). A new backend is one
 * package with a provider listed in {@code META-INF/services}; nothing else builds a backend.
 */
public final class Backends {
  private static final Logger LOG = LoggerFactory.getLogger(Backends.class);

  private Backends() {}

  /** Every provider on the class path, highest priority first. */
  public static List<BackendProvider> providers() {
    List<BackendProvider> out = new ArrayList<>();
    for (BackendProvider p : ServiceLoader.load(BackendProvider.class, Backends.class.getClassLoader())) {
      out.add(p);
    }
    out.sort(Comparator.comparingInt(BackendProvider::priority).reversed());
    return out;
  }

  /** The provider named {@code nameOrAuto}, or for {@code auto} the preferred one that can run in this process. */
  public static BackendProvider pick(String nameOrAuto) {
    return pick(nameOrAuto, p -> p.unavailableReason());
  }

  /**
   * The provider named {@code nameOrAuto}, or for {@code auto} the preferred one that can run on {@code device}
   * (the task's device ordinal, or -1 when it has none); the choice of {@code auto} and why the others were passed
   * over is logged.
   */
  public static BackendProvider pick(String nameOrAuto, int device) {
    return pick(nameOrAuto, p -> p.unavailableReason(device));
  }

  private static BackendProvider pick(String nameOrAuto, Function<BackendProvider, String> probe) {
    String n = normalize(nameOrAuto);
    List<BackendProvider> all = providers();
    if (!n.equals("auto")) {
      for (BackendProvider p : all) {
        if (p.name().equals(n)) {
          return p;
        }
      }
      List<String> names = new ArrayList<>();
      for (BackendProvider p : all) {
        names.add(p.name());
      }
      names.sort(null);
      throw new IllegalArgumentException("Unknown backend '" + nameOrAuto + "' (spark.tp.backend / backend param): use"
          + " auto, " + String.join(", ", names.subList(0, Math.max(0, names.size() - 1)))
          + (names.size() > 1 ? " or " : "") + (names.isEmpty() ? "" : names.get(names.size() - 1)));
    }
    StringBuilder why = new StringBuilder();
    for (BackendProvider p : all) {
      String r = probe.apply(p);
      if (r == null) {
        if (why.length() > 0) {
          LOG.info("spark.tp.backend=auto: using the {} backend (passed over{})", p.name(), why);
        }
        return p;
      }
      why.append("; ").append(p.name()).append(": ").append(r);
    }
    throw new IllegalStateException("No backend can run in this process" + why);
  }

  /** Checks that {@code nameOrAuto} is {@code auto} or a provider's name (available or not); returns it normalized. */
  public static String check(String nameOrAuto) {
    String n = normalize(nameOrAuto);
    if (!n.equals("auto")) {
      pick(n);
    }
    return n;
  }

  /**
   * A new backend of the kind {@link #pick} chooses for {@code device} (the task's device ordinal from its Spark
   * resources, or -1; never guessed); fails with the reason when that kind cannot run here.
   */
  public static Backend create(String nameOrAuto, Map<String, String> settings, int device) {
    BackendProvider p = pick(nameOrAuto, device);
    String reason = p.unavailableReason(device);
    if (reason != null) {
      throw new IllegalStateException("Backend '" + p.name() + "' is unavailable: " + reason);
    }
    return p.create(settings, device);
  }

  private static String normalize(String nameOrAuto) {
    return nameOrAuto == null || nameOrAuto.isBlank() ? "auto" : nameOrAuto.trim().toLowerCase(Locale.ROOT);
  }
}
