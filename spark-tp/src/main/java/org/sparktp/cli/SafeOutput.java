package org.sparktp.cli;

import java.io.IOException;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Locale;
import java.util.UUID;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * The output of {@code infer}, written so that nothing the user did not ask to destroy is lost:
 *
 * <ul>
 *   <li>{@link #checkSeparate}: an output equal to, inside or containing the input (or the model
 *       directory) is refused before anything is touched, comparing qualified paths (scheme, authority,
 *       path; on the local file system with links resolved);
 *   <li>the job writes into a staging folder beside the target ({@code .<name>.spark-tp-staging-<id>},
 *       hidden from Spark's and Hadoop's readers); {@link #commit} moves it to the target only after
 *       the job succeeded, and with {@code overwrite} moves the old output aside first and deletes it
 *       only once the new one is in place; {@link #close} without a commit deletes the staging folder,
 *       so a failed job leaves the old output as it was and no staging folder; a staging folder that a run
 *       killed with {@code kill -9} left is removed (and reported) by the next run into the same target.
 * </ul>
 */
final class SafeOutput implements AutoCloseable {
  private final FileSystem fs;
  private final Path target;
  private final Path staging;
  private final boolean overwrite;
  private boolean committed;

  private SafeOutput(FileSystem fs, Path target, Path staging, boolean overwrite) {
    this.fs = fs;
    this.target = target;
    this.staging = staging;
    this.overwrite = overwrite;
  }

  /**
   * Refuses an output that is {@code other} ({@code what}: "the input", "the model directory"), lies
   * inside it, or contains it.
   */
  static void checkSeparate(String output, String other, String what, Configuration conf) throws IOException {
    URI o = qualify(new Path(output), conf);
    URI i = qualify(globFree(new Path(other)), conf);
    if (o.equals(i)) {
      throw new UsageException("output " + output + " is " + what + " (" + other + "); choose another output path");
    }
    if (within(o, i)) {
      throw new UsageException("output " + output + " is inside " + what + " " + other
          + "; choose an output path outside it");
    }
    if (within(i, o)) {
      throw new UsageException("output " + output + " contains " + what + " " + other
          + "; choose an output path that does not hold it");
    }
  }

  /** The path up to its first component with a glob character ({@code * ? [ {}). */
  private static Path globFree(Path p) {
    Path cur = p;
    Path free = p;
    while (cur != null) {
      String n = cur.getName();
      if (n.indexOf('*') >= 0 || n.indexOf('?') >= 0 || n.indexOf('[') >= 0 || n.indexOf('{') >= 0) {
        free = cur.getParent();
      }
      cur = cur.getParent();
    }
    return free == null ? p : free;
  }

  /** Scheme, authority and normalized path; on {@code file:} the real path (links resolved). */
  static URI qualify(Path p, Configuration conf) throws IOException {
    FileSystem fs = p.getFileSystem(conf);
    URI u = fs.makeQualified(p).toUri();
    String path = u.getPath();
    if ("file".equalsIgnoreCase(u.getScheme())) {
      java.nio.file.Path local = Paths.get(path).toAbsolutePath().normalize();
      java.nio.file.Path existing = local;
      while (existing != null && !Files.exists(existing)) {
        existing = existing.getParent();
      }
      if (existing != null) {
        local = existing.toRealPath().resolve(existing.relativize(local));
      }
      path = local.toString();
    } else {
      path = new Path(path).toUri().normalize().getPath();
    }
    while (path.length() > 1 && path.endsWith("/")) {
      path = path.substring(0, path.length() - 1);
    }
    String scheme = u.getScheme() == null ? "" : u.getScheme().toLowerCase(Locale.ROOT);
    String auth = u.getAuthority() == null ? "" : u.getAuthority().toLowerCase(Locale.ROOT);
    try {
      return new URI(scheme, auth.isEmpty() ? null : auth, path.startsWith("/") ? path : "/" + path, null, null);
    } catch (java.net.URISyntaxException e) {
      throw new IOException("Cannot compare the path " + p + ": " + e.getMessage(), e);
    }
  }

  /** Whether {@code a} lies strictly inside {@code b}. */
  static boolean within(URI a, URI b) {
    if (!a.getScheme().equals(b.getScheme()) || !String.valueOf(a.getAuthority()).equals(
        String.valueOf(b.getAuthority()))) {
      return false;
    }
    String pa = a.getPath();
    String pb = b.getPath();
    String prefix = pb.endsWith("/") ? pb : pb + "/";
    return !pa.equals(pb) && pa.startsWith(prefix);
  }

  /**
   * Starts an output at {@code target}: refused when it exists and {@code overwrite} is false. The job
   * writes to {@link #staging()}.
   */
  static SafeOutput begin(String target, boolean overwrite, Configuration conf, java.io.PrintStream err)
      throws IOException {
    Path t = new Path(target);
    FileSystem fs = t.getFileSystem(conf);
    Path q = fs.makeQualified(t);
    if (q.getParent() == null) {
      throw new UsageException("output " + target + " is the root of its file system; choose a folder");
    }
    if (!overwrite && fs.exists(q)) {
      throw new UsageException("output " + target + " already exists; choose another path or pass --mode overwrite");
    }
    // a run killed with kill -9 (or a lost driver) could not remove its staging folder: this run into the same
    // target removes it, and says so
    String left = "." + q.getName() + ".spark-tp-staging-";
    FileStatus[] siblings = fs.exists(q.getParent()) ? fs.listStatus(q.getParent()) : new FileStatus[0];
    for (FileStatus s : siblings) {
      if (s.getPath().getName().startsWith(left)) {
        err.println("spark-tp infer: WARN removing the staging folder " + s.getPath() + " that an earlier run into "
            + target + " left (it was killed before it could clean up)");
        if (!fs.delete(s.getPath(), true)) {
          throw new IOException("Cannot delete the staging folder " + s.getPath() + " of an earlier run; delete it by"
              + " hand");
        }
      }
    }
    Path staging = sibling(q, "staging");
    fs.deleteOnExit(staging); // a launcher stopped by a signal removes it when Hadoop closes its file systems
    return new SafeOutput(fs, q, staging, overwrite);
  }

  private static Path sibling(Path q, String what) {
    return new Path(q.getParent(), "." + q.getName() + ".spark-tp-" + what + "-"
        + UUID.randomUUID().toString().substring(0, 8));
  }

  /** Where the job writes. */
  Path staging() {
    return staging;
  }

  /**
   * Moves the staged output to the target. With {@code overwrite}, an existing target is first moved
   * aside, restored if the second move fails, and deleted once the new output is in place.
   */
  void commit() throws IOException {
    if (!fs.exists(staging)) {
      throw new IOException("The job wrote no output folder " + staging);
    }
    Path old = null;
    if (fs.exists(target)) {
      if (!overwrite) {
        throw new IOException("Output " + target + " appeared while the job ran; nothing was written there (pass"
            + " --mode overwrite to replace it)");
      }
      old = sibling(target, "old");
      if (!fs.rename(target, old)) {
        throw new IOException("Cannot move the old output " + target + " aside (to " + old + "); it is unchanged and"
            + " the new output was not kept");
      }
    }
    if (!fs.rename(staging, target)) {
      if (old != null && !fs.rename(old, target)) {
        throw new IOException("Cannot move the new output into " + target + ", nor the old output back from " + old
            + "; the old output is in " + old);
      }
      throw new IOException("Cannot move the new output from " + staging + " to " + target
          + (old != null ? "; the old output is unchanged" : ""));
    }
    committed = true;
    fs.cancelDeleteOnExit(staging);
    if (old != null && !fs.delete(old, true)) {
      throw new IOException("The new output is in " + target + ", but the old output could not be deleted from "
          + old + "; delete it by hand");
    }
  }

  /** Deletes the staging folder unless the output was committed. */
  @Override
  public void close() throws IOException {
    if (!committed) {
      try {
        if (fs.exists(staging)) {
          fs.delete(staging, true);
        }
      } finally {
        fs.cancelDeleteOnExit(staging);
      }
    }
  }
}
