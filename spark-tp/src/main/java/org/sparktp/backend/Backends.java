package org.sparktp.backend;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.ServiceLoader;

/**
 * The backends this process can use, found through {@link ServiceLoader} ({@link BackendProvider}, as DJL's
 * {@code EngineProvider}): {@code spark.tp.backend} names one, {@code auto} takes the available one with the
 * highest priority. A new backend (a GPU) plugs in by shipping a provider; no Spark code changes.
 */
public final class Backends {
  private Backends() {}

  /** Every provider on the class path, highest priority first (names are lower case and unique). */
  public static List<BackendProvider> providers() {
    List<BackendProvider> out = new ArrayList<>();
    ClassLoader cl = Backends.class.getClassLoader();
    for (BackendProvider p : ServiceLoader.load(BackendProvider.class, cl)) {
      boolean dup = false;
      for (BackendProvider q : out) {
        dup |= q.name().equals(p.name());
      }
      if (!dup) {
        out.add(p);
      }
    }
    out.sort(Comparator.comparingInt(BackendProvider::priority).reversed().thenComparing(BackendProvider::name));
    return out;
  }

  /** The provider named {@code nameOrAuto}, or for {@code auto} the available one with the highest priority. */
  public static BackendProvider pick(String nameOrAuto) {
    String n = nameOrAuto == null ? "auto" : nameOrAuto.trim().toLowerCase(Locale.ROOT);
    List<BackendProvider> all = providers();
    if (n.equals("auto")) {
      StringBuilder why = new StringBuilder();
      for (BackendProvider p : all) {
        String r = p.unavailableReason();
        if (r == null) {
          return p;
        }
        why.append("; ").append(p.name()).append(": ").append(r);
      }
      throw new IllegalStateException("No backend can run in this process (spark.tp.backend=auto)" + why);
    }
    for (BackendProvider p : all) {
      if (p.name().equals(n)) {
        String r = p.unavailableReason();
        if (r != null) {
          throw new IllegalStateException("Backend '" + n + "' (spark.tp.backend) cannot run here: " + r);
        }
        return p;
      }
    }
    throw new IllegalArgumentException("Unknown backend '" + nameOrAuto + "' (spark.tp.backend / backend param): "
        + "use auto or one of: " + names(all));
  }

  /** Checks that {@code nameOrAuto} is {@code auto} or a known provider's name (available or not); returns it normalized. */
  public static String check(String nameOrAuto) {
    String n = nameOrAuto == null ? "" : nameOrAuto.trim().toLowerCase(Locale.ROOT);
    List<BackendProvider> all = providers();
    if (n.equals("auto")) {
      return n;
    }
    for (BackendProvider p : all) {
      if (p.name().equals(n)) {
        return n;
      }
    }
    throw new IllegalArgumentException("Unknown backend '" + nameOrAuto + "' (spark.tp.backend / backend param): "
        + "use auto or one of: " + names(all));
  }

  /** A new backend of the provider {@link #pick} chooses. */
  public static Backend create(String nameOrAuto, Map<String, String> settings, int device) {
    return pick(nameOrAuto).create(settings, device);
  }

  private static String names(List<BackendProvider> all) {
    StringBuilder sb = new StringBuilder();
    for (BackendProvider p : all) {
      sb.append(sb.length() == 0 ? "" : ", ").append(p.name());
    }
    return sb.length() == 0 ? "(none found)" : sb.toString();
  }
}
