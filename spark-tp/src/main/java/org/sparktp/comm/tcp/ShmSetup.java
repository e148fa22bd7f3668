package org.sparktp.comm.tcp;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.comm.tcp.TcpTransport.Peer;

/**
 * How the ranks of a group agree, over their authenticated connections, on a {@link ShmSegment}: rank 0 creates it
 * and sends its name, each peer maps it and answers, rank 0 announces the decision (shared memory only if every rank
 * mapped it) and unlinks the file. Rank 0 always sends its offer (possibly "none", then nothing more is exchanged)
 * and the peers answer even when they do not want shared memory, so that ranks configured differently still agree
 * (on TCP).
 */
final class ShmSetup {
  private static final Logger LOG = LoggerFactory.getLogger(ShmSetup.class);
  private static final int SHM_MAGIC = 0x5450534D; // "TPSM"

  private ShmSetup() {}

  /** True when every peer's address (as given to the rendezvous) is on {@code self}'s host. */
  static boolean sameHost(String self, Peer[] peers) {
    String h = host(self);
    for (Peer p : peers) {
      if (p != null && !host(p.address).equals(h)) {
        return false;
      }
    }
    return true;
  }

  private static String host(String address) {
    int c = address.lastIndexOf(':');
    return c < 0 ? address : address.substring(0, c);
  }

  /**
   * Agrees with the peers on a segment of one window of {@link TcpTransport#chunkBytes} per rank; returns it (every
   * rank mapped it, its file is already unlinked) or {@code null} (the group uses TCP).
   */
  static ShmSegment agree(TcpTransport t, boolean wanted) {
    t.phase("shared-memory setup");
    try {
      return t.rank == 0 ? offer(t, wanted) : answer(t, wanted);
    } finally {
      t.phase(null);
    }
  }

  private static ShmSegment offer(TcpTransport t, boolean wanted) {
    int size = t.size;
    int window = t.chunkBytes;
    byte[] nonce = new byte[ShmSegment.NONCE_BYTES];
    new SecureRandom().nextBytes(nonce);
    ShmSegment seg = null;
    if (wanted && window / size >= ShmSegment.LINE) {
      try {
        seg = ShmSegment.create(size, window, nonce);
      } catch (IOException e) {
        LOG.warn("Rank 0 cannot create a shared-memory segment in {}; the group uses TCP", ShmSegment.directory(), e);
      }
    }
    boolean all = seg != null;
    try {
      byte[] name = seg == null ? new byte[0] : seg.name().getBytes(StandardCharsets.UTF_8);
      for (int q = 1; q < size; q++) {
        ByteBuffer offer = ByteBuffer.allocate(16 + nonce.length + name.length);
        offer.putInt(SHM_MAGIC).putInt(seg != null ? 1 : 0).putInt(window).put(nonce).putInt(name.length).put(name)
            .flip();
        t.writeFully(t.peers[q], offer);
      }
      for (int q = 1; seg != null && q < size; q++) {
        ByteBuffer reply = ByteBuffer.allocate(8);
        t.readFully(t.peers[q], reply, "agreeing on shared memory with");
        checkMagic(t, t.peers[q], reply.getInt(0));
        all &= reply.getInt(4) == 1;
      }
      for (int q = 1; seg != null && q < size; q++) {
        t.writeFully(t.peers[q], ByteBuffer.allocate(8).putInt(SHM_MAGIC).putInt(all ? 1 : 0).flip());
      }
    } catch (RuntimeException | Error e) {
      if (seg != null) {
        seg.close(); // unmapped now, unlinked below
      }
      throw e;
    } finally {
      if (seg != null) {
        try {
          seg.unlink();
        } catch (IOException e) {
          seg.close();
          throw new CommunicatorException("rank 0 cannot remove its shared-memory segment " + seg.name(), e);
        }
      }
    }
    if (all) {
      return seg;
    }
    if (seg != null) {
      seg.close();
    }
    return null;
  }

  private static ShmSegment answer(TcpTransport t, boolean wanted) {
    Peer root = t.peers[0];
    ByteBuffer head = ByteBuffer.allocate(12 + ShmSegment.NONCE_BYTES + 4);
    t.readFully(root, head, "agreeing on shared memory with");
    head.flip();
    checkMagic(t, root, head.getInt());
    boolean offered = head.getInt() == 1;
    int theirWindow = head.getInt();
    byte[] nonce = new byte[ShmSegment.NONCE_BYTES];
    head.get(nonce);
    int nameLen = head.getInt();
    if (nameLen < 0 || nameLen > 4096) {
      throw t.protocolError(root, "a shared-memory offer with a name of " + nameLen + " bytes", "not a spark-tp offer");
    }
    ByteBuffer nameBuf = ByteBuffer.allocate(nameLen);
    t.readFully(root, nameBuf, "agreeing on shared memory with");
    String name = new String(nameBuf.array(), StandardCharsets.UTF_8);
    ShmSegment seg = null;
    if (offered && wanted && theirWindow >= TcpOptions.MIN_CHUNK_BYTES && theirWindow <= TcpOptions.MAX_CHUNK_BYTES
        && theirWindow % 4 == 0 && theirWindow / t.size >= ShmSegment.LINE) {
      try {
        seg = ShmSegment.open(name, t.size, theirWindow, nonce);
      } catch (IOException e) {
        LOG.warn("Rank {} cannot map the shared-memory segment of rank 0; the group uses TCP", t.rank, e);
      }
    }
    boolean decided = false;
    try {
      if (!offered) {
        return null; // rank 0 does not offer shared memory: no reply, TCP
      }
      t.writeFully(root, ByteBuffer.allocate(8).putInt(SHM_MAGIC).putInt(seg != null ? 1 : 0).flip());
      ByteBuffer decision = ByteBuffer.allocate(8);
      t.readFully(root, decision, "agreeing on shared memory with");
      checkMagic(t, root, decision.getInt(0));
      decided = decision.getInt(4) == 1;
      if (decided && seg == null) {
        throw t.protocolError(root, "a decision to use shared memory that this rank could not map",
            "not a spark-tp decision");
      }
    } catch (RuntimeException | Error e) {
      if (seg != null) {
        seg.close();
      }
      throw e;
    }
    if (decided) {
      return seg;
    }
    if (seg != null) {
      seg.close();
    }
    return null;
  }

  private static void checkMagic(TcpTransport t, Peer from, int magic) {
    if (magic != SHM_MAGIC) {
      throw t.protocolError(from, "an unknown message type 0x" + Integer.toHexString(magic) + " while agreeing on "
          + "shared memory", "not a spark-tp message");
    }
  }
}
