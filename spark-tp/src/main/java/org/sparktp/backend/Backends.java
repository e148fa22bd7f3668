package org.sparktp.backend;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.ServiceLoader;

/**
 * The backend kinds on the class path ({@link BackendProvider}s found by {@link ServiceLoader}) and the
 * choice among them for {@code spark.tp.backend}: a name, or {@code auto} (the highest priority whose
 * {@link BackendProvider#unavailableReason()} is null).
 */
public final class Backends {
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

  /** The provider named {@code nameOrAuto}, or for {@code auto} the preferred one that can run here. */
  public static BackendProvider pick(String nameOrAuto) {
    String n = nameOrAuto == null ? "auto" : nameOrAuto.trim().toLowerCase(Locale.ROOT);
    List<BackendProvider> all = providers();
    StringBuilder names = new StringBuilder("auto");
    for (BackendProvider p : all) {
      names.append(", ").append(p.name());
      if (p.name().equals(n)) {
        return p;
      }
    }
    if (n.equals("auto")) {
      StringBuilder why = new StringBuilder();
      for (BackendProvider p : all) {
        String r = p.unavailableReason();
        if (r == null) {
          return p;
        }
        why.append("; ").append(p.name()).append(": ").append(r);
      }
      throw new IllegalStateException("No backend can run in this process" + why);
    }
    throw new IllegalArgumentException("Unknown backend '" + nameOrAuto + "' (spark.tp.backend): use one of " + names);
  }

  /** Checks that {@code nameOrAuto} is {@code auto} or a known provider's name (available or not); returns it normalized. */
  public static String check(String nameOrAuto) {
    String n = nameOrAuto == null ? "auto" : nameOrAuto.trim().toLowerCase(Locale.ROOT);
    if (!n.equals("auto")) {
      pick(n);
    }
    return n;
  }

  /** A new backend of the kind {@link #pick} chooses; fails with the reason when that kind cannot run here. */
  public static Backend create(String nameOrAuto, Map<String, String> settings, int device) {
    BackendProvider p = pick(nameOrAuto);
    String reason = p.unavailableReason();
    if (reason != null) {
      throw new IllegalStateException("Backend '" + p.name() + "' is unavailable: " + reason);
    }
    return p.create(settings, device);
  }
}
