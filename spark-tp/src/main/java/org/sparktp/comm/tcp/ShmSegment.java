package org.sparktp.comm.tcp;

import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One shared-memory segment of a group whose ranks are all on one host, mapped by every rank.
 *
 * <p>Layout (all offsets 64-byte aligned): a header with a 32-byte nonce and one cache line per rank
 * holding its step counter ({@link #posted}); then, per rank, two buffers (used by alternate rounds) of
 * a 64-byte descriptor (collective number, operation, an agreed size) followed by {@link #window} data
 * bytes. Only rank {@code r} writes its counter and its buffers; every rank reads them. Counters are read
 * with acquire and written with release semantics, so a rank that sees a peer's step also sees the data
 * the peer wrote before it.
 *
 * <p>The file is created by rank 0 with a random 128-bit name, owner-only permissions (0600) and its whole
 * size written (so a full {@code /dev/shm} fails here, not later), and unlinked as soon as every rank has
 * mapped it: nothing is left behind even if a process dies.
 */
final class ShmSegment implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(ShmSegment.class);
  static final String PREFIX = "sparktp-shm-";
  private static final Pattern NAME = Pattern.compile(Pattern.quote(PREFIX) + "[0-9a-f]{32}");
  private static final VarHandle LONGS = MethodHandles.byteBufferViewVarHandle(long[].class, ByteOrder.nativeOrder());
  static final int LINE = 64;
  static final int NONCE_BYTES = 32;

  final int size;
  final int window;
  private final long header;
  private final long stride;
  private final Path path;
  private MappedByteBuffer map;

  private ShmSegment(int size, int window, Path path, MappedByteBuffer map) {
    this.size = size;
    this.window = window;
    this.header = roundUp((long) LINE * (1 + size), 4096);
    this.stride = LINE + roundUp(window, LINE);
    this.path = path;
    this.map = map;
    map.order(ByteOrder.nativeOrder());
  }

  static long bytesFor(int size, int window) {
    return roundUp((long) LINE * (1 + size), 4096) + 2L * size * (LINE + roundUp(window, LINE));
  }

  private static long roundUp(long x, long a) {
    return (x + a - 1) / a * a;
  }

  /** Where segments are made: {@code /dev/shm} when it is a writable directory, else {@code java.io.tmpdir}. */
  static Path directory() {
    Path shm = Path.of("/dev/shm");
    if (Files.isDirectory(shm) && Files.isWritable(shm)) {
      return shm;
    }
    return Path.of(System.getProperty("java.io.tmpdir"));
  }

  /** Creates, fills and maps a new segment file (rank 0); writes {@code nonce} into its header. */
  static ShmSegment create(int size, int window, byte[] nonce) throws IOException {
    long bytes = bytesFor(size, window);
    if (bytes > Integer.MAX_VALUE) {
      throw new IOException("a shared-memory segment of " + bytes + " bytes is too large");
    }
    byte[] rnd = new byte[16];
    new SecureRandom().nextBytes(rnd);
    Path dir = directory();
    Path path = dir.resolve(PREFIX + HexFormat.of().formatHex(rnd));
    boolean posix = dir.getFileSystem().supportedFileAttributeViews().contains("posix");
    if (posix) {
      Files.createFile(path, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
    } else {
      Files.createFile(path);
    }
    boolean ok = false;
    try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE,
        LinkOption.NOFOLLOW_LINKS)) {
      // Writing every byte reserves the pages: a full tmpfs fails with an IOException here instead of a
      // SIGBUS when a mapped page is first touched.
      ByteBuffer zeros = ByteBuffer.allocateDirect(1 << 20);
      long pos = 0;
      while (pos < bytes) {
        zeros.clear().limit((int) Math.min(zeros.capacity(), bytes - pos));
        pos += ch.write(zeros, pos);
      }
      MappedByteBuffer m = ch.map(FileChannel.MapMode.READ_WRITE, 0, bytes);
      ShmSegment s = new ShmSegment(size, window, path, m);
      m.put(0, nonce);
      ok = true;
      return s;
    } finally {
      if (!ok) {
        Files.deleteIfExists(path);
      }
    }
  }

  /** Maps the segment {@code name} made by rank 0 and checks that it holds {@code nonce} (a peer). */
  static ShmSegment open(String name, int size, int window, byte[] nonce) throws IOException {
    Path p = Path.of(name);
    if (!p.isAbsolute() || p.getFileName() == null || !NAME.matcher(p.getFileName().toString()).matches()) {
      throw new IOException("refusing shared-memory segment name '" + name + "'");
    }
    long bytes = bytesFor(size, window);
    try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ, StandardOpenOption.WRITE,
        LinkOption.NOFOLLOW_LINKS)) {
      if (ch.size() != bytes) {
        throw new IOException("shared-memory segment " + name + " holds " + ch.size() + " bytes, expected " + bytes);
      }
      MappedByteBuffer m = ch.map(FileChannel.MapMode.READ_WRITE, 0, bytes);
      ShmSegment s = new ShmSegment(size, window, null, m);
      byte[] got = new byte[NONCE_BYTES];
      m.get(0, got);
      if (!java.security.MessageDigest.isEqual(got, nonce)) {
        s.close();
        throw new IOException("shared-memory segment " + name + " does not hold the expected nonce (not the same "
            + "memory as rank 0's: another container or mount namespace?)");
      }
      return s;
    }
  }

  String name() {
    return path == null ? null : path.toString();
  }

  /** Removes the file (rank 0, once every rank mapped it); the mappings stay valid. */
  void unlink() throws IOException {
    if (path != null) {
      Files.deleteIfExists(path);
    }
  }

  long posted(int r) {
    return (long) LONGS.getAcquire(map, (int) (LINE * (1L + r)));
  }

  void post(int r, long step) {
    LONGS.setRelease(map, (int) (LINE * (1L + r)), step);
  }

  private int base(int r, int b) {
    return (int) (header + (2L * r + b) * stride);
  }

  /** The data area of rank {@code r}'s buffer {@code b} ({@link #window} bytes, native order). */
  ByteBuffer data(int r, int b) {
    return map.slice(base(r, b) + LINE, window).order(ByteOrder.nativeOrder());
  }

  void writeDescriptor(int r, int b, int seq, int op, long arg) {
    int o = base(r, b);
    map.putInt(o, seq);
    map.putInt(o + 4, op);
    map.putLong(o + 8, arg);
  }

  int descriptorSeq(int r, int b) {
    return map.getInt(base(r, b));
  }

  int descriptorOp(int r, int b) {
    return map.getInt(base(r, b) + 4);
  }

  long descriptorArg(int r, int b) {
    return map.getLong(base(r, b) + 8);
  }

  /** Unmaps the segment (at once, through the JDK's cleaner; no thread may touch it afterwards). */
  @Override
  public void close() {
    MappedByteBuffer m = map;
    map = null;
    if (m == null) {
      return;
    }
    try {
      Class<?> unsafeClass = Class.forName("sun.misc.Unsafe");
      Field f = unsafeClass.getDeclaredField("theUnsafe");
      f.setAccessible(true);
      Method clean = unsafeClass.getMethod("invokeCleaner", ByteBuffer.class);
      clean.invoke(f.get(null), m);
    } catch (ReflectiveOperationException | RuntimeException e) {
      // The mapping is then released when the buffer is garbage collected.
      LOG.warn("Could not unmap the shared-memory segment at once; the GC will release it", e);
    }
  }
}
