package org.sparktp.thrift;

import java.nio.charset.StandardCharsets;
import java.security.Provider;
import java.security.Security;
import java.util.Map;
import javax.security.auth.callback.CallbackHandler;
import javax.security.sasl.SaslException;
import javax.security.sasl.SaslServer;
import javax.security.sasl.SaslServerFactory;

/**
 * SASL {@code PLAIN} (RFC 4616) on the server side, as HiveServer2 runs it with {@code hive.server2.authentication=NONE}:
 * the Hive JDBC driver, beeline and ODBC drivers open their connection with it by default. Any user name and password
 * are accepted (the server does no authentication: bind it to an address only trusted clients reach); the user name
 * is the session's. The JDK has a PLAIN client but no server, so this registers one.
 */
final class PlainSasl {
  static final String MECHANISM = "PLAIN";

  private PlainSasl() {}

  /** Registers the PLAIN server factory with the JDK's SASL (once per JVM). */
  static synchronized void register() {
    if (Security.getProvider(PlainProvider.NAME) == null) {
      Security.addProvider(new PlainProvider());
    }
  }

  /** The provider that names {@link Factory} as the {@code PLAIN} SASL server factory. */
  static final class PlainProvider extends Provider {
    private static final long serialVersionUID = 1L;
    static final String NAME = "spark-tp-sasl-plain";

    PlainProvider() {
      super(NAME, "1.0", "SASL PLAIN server (spark-tp Thrift server)");
      put("SaslServerFactory." + MECHANISM, Factory.class.getName());
    }
  }

  /** Makes {@link Server}s for mechanism {@code PLAIN}. */
  public static final class Factory implements SaslServerFactory {
    @Override
    public SaslServer createSaslServer(String mechanism, String protocol, String serverName, Map<String, ?> props,
        CallbackHandler cbh) {
      return MECHANISM.equals(mechanism) ? new Server() : null;
    }

    @Override
    public String[] getMechanismNames(Map<String, ?> props) {
      return new String[] {MECHANISM};
    }
  }

  /** One exchange: the client's single message {@code [authzid] NUL authcid NUL passwd}. */
  static final class Server implements SaslServer {
    private String user;

    @Override
    public String getMechanismName() {
      return MECHANISM;
    }

    @Override
    public byte[] evaluateResponse(byte[] response) throws SaslException {
      String[] parts = new String(response, StandardCharsets.UTF_8).split("\u0000", -1);
      if (parts.length != 3 || parts[1].isEmpty()) {
        throw new SaslException("SASL PLAIN: expected [authzid] NUL user NUL password, got " + parts.length + " fields");
      }
      user = parts[0].isEmpty() ? parts[1] : parts[0];
      return null;
    }

    @Override
    public boolean isComplete() {
      return user != null;
    }

    @Override
    public String getAuthorizationID() {
      return user;
    }

    @Override
    public byte[] unwrap(byte[] incoming, int offset, int len) {
      throw new IllegalStateException("SASL PLAIN has no security layer");
    }

    @Override
    public byte[] wrap(byte[] outgoing, int offset, int len) {
      throw new IllegalStateException("SASL PLAIN has no security layer");
    }

    @Override
    public Object getNegotiatedProperty(String propName) {
      return null;
    }

    @Override
    public void dispose() {
      user = null;
    }
  }
}
