package org.sparktp.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Consumer;
import java.util.function.Function;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileContext;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Options;
import org.apache.hadoop.fs.Path;
import org.apache.spark.Success$;
import org.apache.spark.rdd.PartitionPruningRDD;
import org.apache.spark.rdd.RDD;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.catalyst.InternalRow;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A write that can be resumed: the input's partitions are cut into ranges of consecutive partitions, and each range
 * is transformed, written and committed on its own (one Spark job per range), so a job whose driver died is finished
 * by running it again: the ranges already committed are skipped, only the missing ones computed, and the target
 * holds every input row exactly once.
 *
 * <p>The target folder holds the committed ranges' files and a manifest, {@value #MANIFEST}: the job's fingerprint
 * (the input files with their sizes and modification times, how the input is split, and whatever the caller adds:
 * the model directory, the options that change results), the ranges committed (input partitions, rows, file names)
 * and whether the job is complete ({@code _SUCCESS} is written then). A range is written into a staging folder
 * inside the target ({@code .spark-tp-staging-ID}, hidden from Spark's and Hadoop's readers), its files are moved
 * into the target and the manifest is replaced (written beside, then renamed over it); a run into the same target
 * removes what a killed run left (its staging folder, the files of a range whose manifest update did not happen)
 * and says so in one line. A target with a manifest from a different job (input, model, options or splits differ)
 * is refused with one line naming the difference; a non-empty target without a manifest is refused too.
 *
 * <p>The input's splits must not depend on the cluster: unless {@value #MIN_PARTITIONS} is set, it is set to
 * {@link #ranges(int)} while the input is planned, so a file input splits the same way on any master (Spark's
 * {@code spark.sql.files.maxPartitionBytes} and {@code openCostInBytes} still apply and are part of the
 * fingerprint). Pass a Dataset that has not run yet (its splits are fixed when it is first planned).
 */
public final class ResumableWrite {
  /** The manifest's file name in the target folder. */
  public static final String MANIFEST = "_spark_tp_manifest.json";
  /** The setting pinned while the input is planned, so its splits do not depend on the cluster's cores. */
  public static final String MIN_PARTITIONS = "spark.sql.files.minPartitionNum";
  static final String STAGING_PREFIX = ".spark-tp-staging-";
  private static final String VERSION = "spark-tp resumable output 1";
  private static final String[] SPLIT_CONFS = {"spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes",
      MIN_PARTITIONS, "spark.sql.files.maxPartitionNum"};
  private static final Logger LOG = LoggerFactory.getLogger(ResumableWrite.class);
  private static final ObjectMapper JSON = new ObjectMapper();

  private final String target;
  private String format = "parquet";
  private final Map<String, String> options = new LinkedHashMap<>();
  private final Map<String, String> fingerprint = new LinkedHashMap<>();
  private final List<String> fingerprintFiles = new ArrayList<>();
  private int ranges = 32;
  private Consumer<String> log = LOG::info;
  private Consumer<String> warn = LOG::warn;

  /** What a {@link #save} did. */
  public record Result(long rows, int ranges, int skipped, int computed, long rowsComputed) {}

  /** A resumable write into the folder {@code target}. */
  public ResumableWrite(String target) {
    this.target = target;
  }

  /** The output format ({@code parquet} by default; any of Spark's file formats). */
  public ResumableWrite format(String f) {
    this.format = f;
    return this;
  }

  /** An option of the format's writer ({@code header} for CSV, compression...). */
  public ResumableWrite option(String key, String value) {
    options.put(key, value);
    return this;
  }

  /** At most this many ranges (default 32); also the input's {@value #MIN_PARTITIONS} unless set. */
  public ResumableWrite ranges(int n) {
    if (n < 1) {
      throw new IllegalArgumentException("ranges must be at least 1, got " + n);
    }
    this.ranges = n;
    return this;
  }

  /** A part of the job's identity: a resumed run must give the same value (e.g. the options that change results). */
  public ResumableWrite fingerprint(String key, String value) {
    fingerprint.put(key, value);
    return this;
  }

  /** The files under {@code path} (names, sizes, modification times) as a part of the job's identity (a model). */
  public ResumableWrite fingerprintFiles(String key, String path) {
    fingerprintFiles.add(key);
    fingerprint.put(key, path);
    return this;
  }

  /** Where progress lines (a range committed) and warnings (what a killed run left, removed) go; default: the log. */
  public ResumableWrite lines(Consumer<String> info, Consumer<String> warning) {
    this.log = info;
    this.warn = warning;
    return this;
  }

  /**
   * Runs {@code transform} on each range of {@code input} not yet committed in the target and commits it; marks the
   * target complete once every range is. Throws {@link IllegalArgumentException} (one line) when the target holds
   * another job's output.
   */
  public Result save(Dataset<Row> input, Function<Dataset<Row>, Dataset<Row>> transform) throws IOException {
    org.apache.spark.sql.classic.Dataset<Row> ds;
    try {
      ds = (org.apache.spark.sql.classic.Dataset<Row>) input;
    } catch (ClassCastException e) {
      throw new IllegalArgumentException("ResumableWrite needs a classic (non-Connect) Spark session", e);
    }
    org.apache.spark.sql.classic.SparkSession spark = ds.sparkSession();
    Configuration conf = spark.sparkContext().hadoopConfiguration();
    boolean pin = !spark.conf().contains(MIN_PARTITIONS);
    if (pin) {
      spark.conf().set(MIN_PARTITIONS, Integer.toString(ranges));
    }
    RDD<InternalRow> rows;
    Map<String, String> id = new LinkedHashMap<>();
    try {
      rows = ds.queryExecution().toRdd(); // the splits are fixed here
      StringBuilder split = new StringBuilder().append(rows.getNumPartitions()).append(" partitions");
      for (String k : SPLIT_CONFS) {
        split.append(", ").append(k.substring("spark.sql.files.".length())).append('=')
            .append(spark.conf().contains(k) ? spark.conf().get(k) : "default");
      }
      id.put("input files", describeFiles(Arrays.asList(input.inputFiles()), conf));
      id.put("input splits", split.toString());
    } finally {
      if (pin) {
        spark.conf().unset(MIN_PARTITIONS);
      }
    }
    for (Map.Entry<String, String> e : fingerprint.entrySet()) {
      id.put(e.getKey(), fingerprintFiles.contains(e.getKey()) ? e.getValue() + ": " + describeFiles(
          List.of(e.getValue()), conf) : e.getValue());
    }
    int n = rows.getNumPartitions();
    int per = Math.max(1, (n + ranges - 1) / ranges);
    int count = n == 0 ? 0 : (n + per - 1) / per;

    Path t = new Path(target);
    FileSystem fs = t.getFileSystem(conf);
    t = fs.makeQualified(t);
    ObjectNode manifest = open(fs, t, id, n, count);
    String run = UUID.randomUUID().toString().substring(0, 8);
    Path staging = new Path(t, STAGING_PREFIX + run);
    fs.deleteOnExit(staging); // SIGINT/SIGTERM remove it when Hadoop closes its file systems; kill -9 cannot
    Set<Integer> done = committedRanges(manifest);
    int skipped = done.size();
    int computed = 0;
    long computedRows = 0;
    ObjectNode last = manifest.putObject("last_run");
    last.put("skipped", skipped).put("computed", 0);
    writeManifest(fs, t, manifest, conf);
    WrittenRows counter = new WrittenRows();
    spark.sparkContext().addSparkListener(counter);
    try {
      for (int r = 0; r < count; r++) {
        if (done.contains(r)) {
          continue;
        }
        int first = r * per;
        int lastPart = Math.min(n, first + per) - 1;
        RDD<InternalRow> slice = PartitionPruningRDD.create(rows, new InRange(first, lastPart));
        Dataset<Row> part = spark.internalCreateDataFrame(slice, input.schema(), false);
        Path dir = new Path(staging, "range-" + r);
        counter.reset();
        transform.apply(part).write().mode(SaveMode.ErrorIfExists).format(format).options(options)
            .save(dir.toString());
        long written = counter.rows(spark);
        manifest = readManifest(fs, t); // another run into the same target may have committed it meanwhile
        if (committedRanges(manifest).contains(r)) {
          warn.accept("range " + r + " was committed by another run into " + t + " meanwhile; this run's copy is"
              + " dropped");
          fs.delete(dir, true);
          continue;
        }
        ArrayNode files = JSON.createArrayNode();
        for (FileStatus f : fs.listStatus(dir)) {
          String name = f.getPath().getName();
          if (f.isFile() && visible(name)) {
            Path dst = new Path(t, String.format(Locale.ROOT, "r%05d-%s", r, name));
            if (!fs.rename(f.getPath(), dst)) {
              throw new IOException("Cannot move " + f.getPath() + " into the output " + dst);
            }
            files.add(dst.getName());
          }
        }
        ObjectNode c = ((ArrayNode) manifest.get("committed")).addObject();
        c.put("range", r).put("first_partition", first).put("last_partition", lastPart).put("rows", written);
        c.set("files", files);
        manifest.put("rows", manifest.path("rows").asLong() + written);
        computed++;
        computedRows += written;
        manifest.putObject("last_run").put("skipped", skipped).put("computed", computed);
        writeManifest(fs, t, manifest, conf);
        fs.delete(dir, true);
        log.accept(String.format(Locale.ROOT, "range %d of %d committed (input partitions %d-%d, %,d rows)", r + 1,
            count, first, lastPart, written));
      }
      manifest.put("complete", true);
      writeManifest(fs, t, manifest, conf);
      fs.create(new Path(t, "_SUCCESS"), true).close();
    } finally {
      spark.sparkContext().removeSparkListener(counter);
      try {
        if (fs.exists(staging)) {
          fs.delete(staging, true);
        }
      } finally {
        fs.cancelDeleteOnExit(staging);
      }
    }
    return new Result(manifest.path("rows").asLong(), count, skipped, computed, computedRows);
  }

  /**
   * The target's manifest: a new one for a target that does not exist or is empty; the existing one when its
   * fingerprint is {@code id}, after removing what a killed run left. Refuses another job's target in one line.
   */
  private ObjectNode open(FileSystem fs, Path t, Map<String, String> id, int partitions, int count) throws IOException {
    Path m = new Path(t, MANIFEST);
    if (!fs.exists(t)) {
      fs.mkdirs(t);
    } else if (!fs.getFileStatus(t).isDirectory()) {
      throw new IllegalArgumentException("output " + target + " is a file; a resumable output is a folder: choose"
          + " another path");
    }
    ObjectNode manifest;
    if (fs.exists(m)) {
      manifest = readManifest(fs, t);
      JsonNode had = manifest.path("fingerprint");
      for (Map.Entry<String, String> e : id.entrySet()) {
        String was = had.path(e.getKey()).asText(null);
        if (!e.getValue().equals(was)) {
          throw new IllegalArgumentException("output " + target + " holds part of a different job (" + e.getKey()
              + " then: " + (was == null ? "not recorded" : was) + "; now: " + e.getValue() + "); --resume only"
              + " finishes the same job (same input, model and options): choose another output path or delete it");
        }
      }
    } else {
      for (FileStatus f : fs.listStatus(t)) {
        if (visible(f.getPath().getName()) || f.getPath().getName().equals("_SUCCESS")) {
          throw new IllegalArgumentException("output " + target + " exists and was not written by a resumable job"
              + " (it has no " + MANIFEST + "); choose another output path");
        }
      }
      manifest = JSON.createObjectNode();
      manifest.put("format", VERSION);
      ObjectNode fp = manifest.putObject("fingerprint");
      id.forEach(fp::put);
      manifest.put("input_partitions", partitions).put("ranges", count).put("rows", 0L).put("complete", false);
      manifest.putArray("committed");
    }
    cleanStaging(fs, t); // only once the target is known to be this job's: a refused run changes nothing
    removeOrphans(fs, t, manifest);
    return manifest;
  }

  /** Removes (and reports) the staging folders that runs killed before they could clean up left in {@code t}. */
  private void cleanStaging(FileSystem fs, Path t) throws IOException {
    for (FileStatus f : fs.listStatus(t)) {
      if (f.getPath().getName().startsWith(MANIFEST + ".") || f.getPath().getName().startsWith("." + MANIFEST)) {
        fs.delete(f.getPath(), false); // a manifest update a killed run did not rename into place
      }
      if (f.getPath().getName().startsWith(STAGING_PREFIX)) {
        warn.accept("removing the staging folder " + f.getPath() + " that an earlier run into " + target
            + " left (it was killed before it could clean up)");
        if (!fs.delete(f.getPath(), true)) {
          throw new IOException("Cannot delete the staging folder " + f.getPath() + " of an earlier run; delete it by"
              + " hand");
        }
      }
    }
  }

  /** Removes the files of a range whose files were moved in but whose manifest update did not happen. */
  private void removeOrphans(FileSystem fs, Path t, ObjectNode manifest) throws IOException {
    Set<String> listed = new HashSet<>();
    for (JsonNode c : manifest.path("committed")) {
      for (JsonNode f : c.path("files")) {
        listed.add(f.asText());
      }
    }
    List<String> removed = new ArrayList<>();
    for (FileStatus f : fs.listStatus(t)) {
      String name = f.getPath().getName();
      if (visible(name) && !listed.contains(name)) {
        if (!fs.delete(f.getPath(), true)) {
          throw new IOException("Cannot delete " + f.getPath() + ", a file of a range that was not committed");
        }
        removed.add(name);
      }
    }
    if (!removed.isEmpty()) {
      warn.accept("removed " + removed.size() + " file(s) of a range whose commit an earlier run did not finish from "
          + target + " (" + String.join(", ", removed) + ")");
    }
  }

  private static Set<Integer> committedRanges(ObjectNode manifest) {
    Set<Integer> done = new HashSet<>();
    for (JsonNode c : manifest.path("committed")) {
      done.add(c.path("range").asInt());
    }
    return done;
  }

  /**
   * The file system the manifest is read and written with: on {@code file:} the raw local one, without Hadoop's
   * {@code .crc} side files (a rename of the manifest and of its checksum are two steps, and a run killed between
   * them would leave a manifest that no longer reads), elsewhere {@code fs}.
   */
  private static FileSystem manifestFs(FileSystem fs, Configuration conf) throws IOException {
    return "file".equals(fs.getScheme()) ? FileSystem.getLocal(conf).getRawFileSystem() : fs;
  }

  /** Reads the manifest of the target {@code t}. */
  static ObjectNode readManifest(FileSystem fs, Path t) throws IOException {
    Path m = new Path(t, MANIFEST);
    try (java.io.InputStream in = manifestFs(fs, fs.getConf()).open(m)) {
      JsonNode n = JSON.readTree(in);
      if (n == null || !n.isObject() || !VERSION.equals(n.path("format").asText())) {
        throw new IllegalArgumentException(m + " is not a spark-tp manifest (" + VERSION + "); choose another output"
            + " path");
      }
      return (ObjectNode) n;
    } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
      throw new IllegalArgumentException(m + " is not valid JSON (" + e.getOriginalMessage() + "); choose another"
          + " output path", e);
    }
  }

  /** Whether the target folder {@code dir} has a manifest that does not say complete (a resumable job to finish). */
  public static boolean unfinished(String dir, Configuration conf) throws IOException {
    Path t = new Path(dir);
    FileSystem fs = t.getFileSystem(conf);
    if (!fs.exists(new Path(t, MANIFEST))) {
      return false;
    }
    try {
      return !readManifest(fs, t).path("complete").asBoolean();
    } catch (IllegalArgumentException e) {
      return false; // not one of ours: no resume to suggest
    }
  }

  /** Writes the manifest beside it and renames it over the old one (atomic where rename is: HDFS, local). */
  private static void writeManifest(FileSystem fs, Path t, ObjectNode manifest, Configuration conf)
      throws IOException {
    Path tmp = new Path(t, MANIFEST + "." + UUID.randomUUID().toString().substring(0, 8));
    FileSystem mfs = manifestFs(fs, conf);
    try (OutputStream o = mfs.create(tmp, false)) {
      o.write(JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(manifest));
    }
    Path dst = new Path(t, MANIFEST);
    if (mfs != fs) { // the raw local file system: rename(2) replaces the old manifest atomically
      if (!mfs.rename(tmp, dst)) {
        throw new IOException("Cannot replace the manifest " + dst + " with " + tmp);
      }
    } else {
      FileContext.getFileContext(t.toUri(), conf).rename(tmp, dst, Options.Rename.OVERWRITE);
    }
  }

  /** Not hidden from Spark's and Hadoop's readers (names starting with '.' or '_' are). */
  private static boolean visible(String name) {
    return !name.startsWith(".") && !name.startsWith("_");
  }

  /** {@code N files, B bytes, sha256 H}: H over each file's path, size and modification time, in path order. */
  static String describeFiles(List<String> paths, Configuration conf) throws IOException {
    List<FileStatus> files = new ArrayList<>();
    for (String p : paths) {
      Path path = new Path(p);
      FileSystem fs = path.getFileSystem(conf);
      FileStatus[] matches = fs.globStatus(path);
      if (matches != null) {
        for (FileStatus s : matches) {
          collect(fs, s, files);
        }
      }
    }
    files.sort((a, b) -> a.getPath().toString().compareTo(b.getPath().toString()));
    MessageDigest md;
    try {
      md = MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("This JVM has no SHA-256", e);
    }
    long bytes = 0;
    for (FileStatus f : files) {
      bytes += f.getLen();
      md.update((f.getPath() + "\t" + f.getLen() + "\t" + f.getModificationTime() + "\n")
          .getBytes(StandardCharsets.UTF_8));
    }
    return String.format(Locale.ROOT, "%d files, %,d bytes, sha256 %s", files.size(), bytes,
        HexFormat.of().formatHex(md.digest()).substring(0, 16));
  }

  private static void collect(FileSystem fs, FileStatus s, List<FileStatus> out) throws IOException {
    if (!visible(s.getPath().getName())) {
      return;
    }
    if (s.isFile()) {
      out.add(s);
      return;
    }
    for (FileStatus c : fs.listStatus(s.getPath())) {
      collect(fs, c, out);
    }
  }

  /** Keeps the input partitions {@code first..last}. */
  private static final class InRange extends scala.runtime.AbstractFunction1<Object, Object>
      implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    private final int first;
    private final int last;

    InRange(int first, int last) {
      this.first = first;
      this.last = last;
    }

    @Override
    public Object apply(Object index) {
      int i = (Integer) index;
      return i >= first && i <= last;
    }
  }

  /** Records written by the tasks that succeeded, one value per (stage, partition): a retried task counts once. */
  private static final class WrittenRows extends SparkListener {
    private final Map<String, Long> written = new ConcurrentHashMap<>();

    @Override
    public void onTaskEnd(SparkListenerTaskEnd end) {
      if (end.reason() == Success$.MODULE$ && end.taskMetrics() != null) {
        long w = end.taskMetrics().outputMetrics().recordsWritten();
        if (w > 0) {
          written.put(end.stageId() + ":" + end.taskInfo().index(), w);
        }
      }
    }

    void reset() {
      written.clear();
    }

    long rows(org.apache.spark.sql.SparkSession spark) {
      try {
        spark.sparkContext().listenerBus().waitUntilEmpty(30_000);
      } catch (java.util.concurrent.TimeoutException e) {
        throw new IllegalStateException("Spark's listener bus did not deliver the write's task ends within 30 s;"
            + " the range's row count is unknown", e);
      }
      long n = 0;
      for (long v : written.values()) {
        n += v;
      }
      return n;
    }
  }
}
