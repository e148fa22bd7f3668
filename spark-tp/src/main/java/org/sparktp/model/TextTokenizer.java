package org.sparktp.model;

import ai.djl.huggingface.tokenizers.Encoding;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import java.io.ByteArrayInputStream;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * A Hugging Face tokenizer ({@code tokenizer.json}, the {@code tokenizers} library's serialization, as
 * {@code save_pretrained} writes it next to the model) that turns text into token ids, run by HF's Rust
 * tokenizers through {@code ai.djl.huggingface:tokenizers}.
 *
 * <p>{@code ids = post_process(model(pre_tokenize(normalize(text))))}: the normalizer, pre-tokenizer,
 * model (WordPiece, BPE, Unigram …) and post-processor are the ones the file names, so special tokens are
 * added exactly as the post-processor says (BERT's {@code [CLS] … [SEP]}; none for GPT-2's byte-level
 * BPE). With a maximum length, the ids are truncated to it, the special tokens kept (the text is cut
 * to {@code maxLength} minus the number of special tokens); without one, nothing is truncated and no
 * padding is ever added (a row is its own sequence).
 *
 * <p>The file is read through Hadoop's {@link FileSystem} ({@code file:}, {@code hdfs:}, {@code s3a:} …)
 * into memory and handed to the native library; nothing is written next to the model. The native library
 * is the CPU build inside the DJL jar (Linux x86-64, macOS arm64, Windows x86-64, Linux arm64; the shaded
 * spark-submit jar keeps only Linux x86-64's), copied once to DJL's cache folder ({@code ~/.djl.ai}, or {@code $DJL_CACHE_DIR}, or the temporary folder when the home
 * folder is not writable). Unless the user set them, this class sets the system properties
 * {@code RUST_FLAVOR=cpu} (so DJL never tries to download a CUDA build of the tokenizer on a GPU host) and
 * {@code OPT_OUT_TRACKING=true} (so DJL makes no telemetry call): executors often have no network.
 *
 * <p>An instance owns one native tokenizer: {@link #close()} frees it (once; a second call is harmless).
 * {@link #encode} may be called from several threads at once.
 */
public final class TextTokenizer implements AutoCloseable {
  /** The file name Hugging Face uses for a tokenizer in a model directory. */
  public static final String FILE_NAME = "tokenizer.json";

  /** The largest tokenizer file read (tokenizers of large multilingual models are tens of MB). */
  public static final long MAX_FILE_BYTES = 512L << 20;

  static {
    defaultProperty("RUST_FLAVOR", "cpu");
    defaultProperty("OPT_OUT_TRACKING", "true");
  }

  private final Path path;
  private final int maxLength;
  private final boolean addSpecialTokens;
  /** Encodes hold the read lock while the native tokenizer runs; {@link #close()} takes the write lock. */
  private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
  private HuggingFaceTokenizer tokenizer;

  private TextTokenizer(Path path, HuggingFaceTokenizer tokenizer, int maxLength, boolean addSpecialTokens) {
    this.path = path;
    this.tokenizer = tokenizer;
    this.maxLength = maxLength;
    this.addSpecialTokens = addSpecialTokens;
  }

  private static void defaultProperty(String key, String value) {
    if (System.getenv(key) == null && System.getProperty(key) == null) {
      System.setProperty(key, value);
    }
  }

  /** The tokenizer file of a model directory, or {@code location} itself when it names a file. */
  public static Path resolve(Path location, Configuration conf) throws IOException {
    FileSystem fs = location.getFileSystem(conf);
    if (fs.exists(location) && fs.getFileStatus(location).isDirectory()) {
      return new Path(location, FILE_NAME);
    }
    return location;
  }

  /** True when the model directory {@code modelDir} has a {@value #FILE_NAME}. */
  public static boolean exists(Path modelDir, Configuration conf) throws IOException {
    Path p = resolve(modelDir, conf);
    FileSystem fs = p.getFileSystem(conf);
    return fs.exists(p) && fs.getFileStatus(p).isFile();
  }

  /** Opens the tokenizer of a model directory (or a tokenizer file) with special tokens and no truncation. */
  public static TextTokenizer open(Path location, Configuration conf) throws IOException {
    return open(location, conf, 0, true);
  }

  /**
   * Opens the tokenizer of a model directory, or the tokenizer file {@code location}.
   *
   * @param maxLength when positive, every encoding is truncated to at most this many ids (special tokens
   *     included, and kept); 0 for no truncation
   * @param addSpecialTokens whether the post-processor's special tokens are added
   * @throws ModelFormatException when the file is missing, too large, or not a valid tokenizer, naming it
   */
  public static TextTokenizer open(Path location, Configuration conf, int maxLength, boolean addSpecialTokens)
      throws IOException {
    if (maxLength < 0) {
      throw new IllegalArgumentException("Tokenizer maxLength must be positive, or 0 for no truncation; got "
          + maxLength);
    }
    Path file = resolve(location, conf);
    byte[] json = readFile(location, file, conf);
    Map<String, String> options = new HashMap<>();
    options.put("addSpecialTokens", Boolean.toString(addSpecialTokens));
    options.put("padding", "false");
    if (maxLength > 0) {
      options.put("truncation", "true");
      options.put("maxLength", Integer.toString(maxLength));
      options.put("modelMaxLength", Integer.toString(maxLength));
    } else {
      options.put("truncation", "false");
    }
    HuggingFaceTokenizer t;
    try {
      t = HuggingFaceTokenizer.newInstance(new ByteArrayInputStream(json), options);
    } catch (ai.djl.engine.EngineException e) {
      throw new IllegalStateException("Cannot load the Hugging Face tokenizers native library (from the DJL jar "
          + "ai.djl.huggingface:tokenizers, copied to DJL's cache folder ~/.djl.ai or $DJL_CACHE_DIR) to read "
          + file + ": " + firstCause(e), e);
    } catch (RuntimeException e) {
      throw new ModelFormatException("Invalid tokenizer file " + file + ": " + firstCause(e)
          + ". It must be a Hugging Face tokenizers JSON file (tokenizer.json, as the tokenizer's "
          + "save_pretrained writes it)", e);
    }
    return new TextTokenizer(file, t, maxLength, addSpecialTokens);
  }

  private static byte[] readFile(Path location, Path file, Configuration conf) throws IOException {
    FileSystem fs = file.getFileSystem(conf);
    FileStatus status;
    try {
      status = fs.getFileStatus(file);
    } catch (FileNotFoundException e) {
      throw new ModelFormatException("No tokenizer at " + file + ": text input needs the model's "
          + FILE_NAME + " (the Hugging Face tokenizer saved with the model) in " + location
          + "; add it, or give token ids (array<int>) instead of text", e);
    }
    if (!status.isFile()) {
      throw new ModelFormatException("Invalid tokenizer file " + file + ": it is not a file");
    }
    if (status.getLen() > MAX_FILE_BYTES) {
      throw new ModelFormatException("Invalid tokenizer file " + file + ": it has " + status.getLen()
          + " bytes, more than the limit of " + MAX_FILE_BYTES);
    }
    byte[] bytes = new byte[(int) status.getLen()];
    try (FSDataInputStream in = fs.open(file)) {
      in.readFully(0, bytes, 0, bytes.length);
    }
    return bytes;
  }

  private static String firstCause(Throwable e) {
    Throwable t = e;
    while (t.getCause() != null && t.getCause() != t) {
      t = t.getCause();
    }
    String m = t.getMessage();
    String top = e.getMessage();
    if (t != e && top != null && m != null && !top.contains(m)) {
      return top + ": " + m;
    }
    return m != null ? m : (top != null ? top : e.getClass().getName());
  }

  /** The tokenizer file. */
  public Path path() {
    return path;
  }

  /** The truncation length, or 0 when encodings are not truncated. */
  public int maxLength() {
    return maxLength;
  }

  /** Whether the post-processor's special tokens are added. */
  public boolean addsSpecialTokens() {
    return addSpecialTokens;
  }

  /** The token ids of {@code text}, special tokens and truncation as configured. */
  public int[] encode(String text) {
    if (text == null) {
      throw new IllegalArgumentException("Cannot tokenize a null text with " + path);
    }
    lock.readLock().lock();
    try {
      return toInts(live().encode(text, addSpecialTokens, false).getIds());
    } finally {
      lock.readLock().unlock();
    }
  }

  /** The token ids of each text (one native call for the batch). */
  public int[][] encode(List<String> texts) {
    String[] array = new String[texts.size()];
    for (int i = 0; i < array.length; i++) {
      array[i] = texts.get(i);
      if (array[i] == null) {
        throw new IllegalArgumentException("Cannot tokenize a null text (row " + i + " of the batch) with " + path);
      }
    }
    Encoding[] enc;
    lock.readLock().lock();
    try {
      enc = live().batchEncode(array, addSpecialTokens, false);
    } finally {
      lock.readLock().unlock();
    }
    int[][] out = new int[enc.length][];
    for (int i = 0; i < enc.length; i++) {
      out[i] = toInts(enc[i].getIds());
    }
    return out;
  }

  /**
   * The text of {@code ids} as the file's decoder writes it (byte-level BPE gives back the exact text;
   * WordPiece joins {@code ##} pieces and normalized words); special tokens are dropped when
   * {@code skipSpecialTokens}.
   */
  public String decode(int[] ids, boolean skipSpecialTokens) {
    long[] longs = new long[ids.length];
    for (int i = 0; i < ids.length; i++) {
      longs[i] = ids[i];
    }
    lock.readLock().lock();
    try {
      return live().decode(longs, skipSpecialTokens);
    } finally {
      lock.readLock().unlock();
    }
  }

  private HuggingFaceTokenizer live() {
    if (tokenizer == null) {
      throw new IllegalStateException("Tokenizer " + path + " is closed");
    }
    return tokenizer;
  }

  private int[] toInts(long[] ids) {
    int[] out = new int[ids.length];
    for (int i = 0; i < ids.length; i++) {
      if (ids[i] < 0 || ids[i] > Integer.MAX_VALUE) {
        throw new IllegalStateException("Tokenizer " + path + " produced the id " + ids[i]
            + ", outside [0, 2^31)");
      }
      out[i] = (int) ids[i];
    }
    return out;
  }

  /** Frees the native tokenizer; harmless when called again. */
  @Override
  public void close() {
    lock.writeLock().lock();
    try {
      if (tokenizer != null) {
        tokenizer.close();
        tokenizer = null;
      }
    } finally {
      lock.writeLock().unlock();
    }
  }

  @Override
  public String toString() {
    return "TextTokenizer(" + path + (maxLength > 0 ? ", maxLength " + maxLength : "") + ")";
  }
}
