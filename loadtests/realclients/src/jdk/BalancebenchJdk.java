// Sends balancebench's requests with the JDK's own java.net.http.HttpClient and its connection pool.
//
// balancebench's Locust users keep the load model (closed or open loop, pacing, warm-up, the request
// budget) and write the records; this program only does what a Java service does when it calls another
// service with the JDK's client: a synchronous HttpClient.send() over HTTP/1.1, one thread per request in
// flight, as an application's request threads would. The pool's knobs are the JDK's system properties, set
// on the java command line (jdk.httpclient.connectionPoolSize, jdk.httpclient.keepalive.timeout), so they
// apply to every HttpClient of the process, as they would in an application. One command per line on
// stdin, one answer per request on stdout, tab-separated:
//
//   new   <pool>                 an HttpClient with a connection pool of its own
//   get   <req> <pool> <path>    GET base+path on that client; answered asynchronously
//   close <pool>                 forget the client once its requests are done
//
// It prints "ready" once the HttpClient's classes are loaded and it takes commands. Answer: req status
// error pod node client_conn server_conn conn_request latency_us length detail.
//
// client_conn: JDK 17's HttpClient never says which connection carried a response (HttpResponse has no
// connection, and no hook sees one; HttpResponse.connectionLabel() arrives in JDK 25), so connections are
// numbered (1, 2, ...) by the server's identity of the connection (X-Pod-Name, X-Conn-Id), which is one to
// one with this process's sockets, as balancebench's httpx and requests drivers do.
//
// JDK 17 has no HttpClient.close(): a closed pool's idle connections stay open until the program exits
// (its input closes), which is also when an application's would go.

import java.io.BufferedReader;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.net.ConnectException;
import java.net.ProtocolException;
import java.net.SocketException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.Phaser;
import java.util.concurrent.atomic.AtomicLong;

public final class BalancebenchJdk {
  private static final AtomicLong connections = new AtomicLong();
  private static final Map<String, Long> ids = new ConcurrentHashMap<>();
  private static final LinkedBlockingQueue<String> out = new LinkedBlockingQueue<>();
  private static final String END = "";

  private static final class Pool {
    final HttpClient client;
    final Phaser inflight = new Phaser(1);

    Pool(HttpClient client) {
      this.client = client;
    }
  }

  private static String clientConn(String pod, String serverConn) {
    if (pod.isEmpty() || serverConn.equals("-1")) {
      return "-1";
    }
    return Long.toString(ids.computeIfAbsent(pod + "\t" + serverConn, key -> connections.incrementAndGet()));
  }

  private static String clean(String text) {
    return text == null ? "" : text.replace('\t', ' ').replace('\n', ' ').replace('\r', ' ');
  }

  private static String errorKind(IOException error) {
    String message = String.valueOf(error.getMessage()).toLowerCase();
    if (error instanceof HttpConnectTimeoutException || error instanceof ConnectException) {
      return "connect";
    }
    if (error instanceof HttpTimeoutException) {
      return "timeout";
    }
    if (error instanceof ProtocolException) {
      return "protocol";
    }
    if (error instanceof SocketException
        || error instanceof EOFException
        || message.contains("received no bytes")
        || message.contains("reset")
        || message.contains("closed")) {
      return "reset";
    }
    return "other";
  }

  private static String number(String value, String fallback) {
    try {
      Long.parseLong(value);
      return value;
    } catch (NumberFormatException | NullPointerException e) {
      return fallback;
    }
  }

  private static void get(Pool pool, HttpRequest request, String req) {
    long start = System.nanoTime();
    try {
      HttpResponse<byte[]> response = pool.client.send(request, HttpResponse.BodyHandlers.ofByteArray());
      long latency = (System.nanoTime() - start) / 1000;
      String pod = clean(response.headers().firstValue("X-Pod-Name").orElse(""));
      String serverConn = number(response.headers().firstValue("X-Conn-Id").orElse(null), "-1");
      out.add(
          String.join(
              "\t",
              req,
              Integer.toString(response.statusCode()),
              "",
              pod,
              clean(response.headers().firstValue("X-Node-Name").orElse("")),
              clientConn(pod, serverConn),
              serverConn,
              number(response.headers().firstValue("X-Conn-Request").orElse(null), "0"),
              Long.toString(latency),
              Integer.toString(response.body().length),
              ""));
    } catch (IOException | InterruptedException error) {
      long latency = (System.nanoTime() - start) / 1000;
      String kind = error instanceof IOException ? errorKind((IOException) error) : "other";
      out.add(
          String.join(
              "\t",
              req, "0", kind, "", "", "-1", "-1", "0", Long.toString(latency), "0",
              clean(error.getClass().getSimpleName() + ": " + error.getMessage())));
    } finally {
      pool.inflight.arriveAndDeregister();
    }
  }

  private static void writeLines() {
    try (Writer writer = new OutputStreamWriter(System.out, StandardCharsets.UTF_8)) {
      while (true) {
        String line = out.take();
        if (line == END) {
          break;
        }
        writer.write(line);
        writer.write('\n');
        if (out.isEmpty()) { // one write per burst of answers
          writer.flush();
        }
      }
      writer.flush();
    } catch (IOException | InterruptedException e) {
      System.exit(1);
    }
  }

  private static void fail(String message) {
    System.err.println("bbclient-jdk: " + message);
    System.exit(2);
  }

  private static HttpClient newClient(long connectMillis) {
    return HttpClient.newBuilder()
        // Over plain http the JDK would otherwise offer an h2c upgrade on each new connection.
        .version(HttpClient.Version.HTTP_1_1)
        .connectTimeout(Duration.ofMillis(connectMillis))
        .followRedirects(HttpClient.Redirect.NEVER)
        .proxy(HttpClient.Builder.NO_PROXY)
        .build();
  }

  public static void main(String[] args) throws Exception {
    String base = null;
    boolean keepalive = true;
    long connectMillis = 5000;
    long networkMillis = 30000;
    for (int i = 0; i + 1 < args.length; i += 2) {
      String value = args[i + 1];
      switch (args[i]) {
        case "-base": base = value.replaceAll("/+$", ""); break;
        case "-keepalive": keepalive = Boolean.parseBoolean(value); break;
        case "-connect-timeout-ms": connectMillis = Long.parseLong(value); break;
        case "-network-timeout-ms": networkMillis = Long.parseLong(value); break;
        default: fail("unknown option " + args[i]);
      }
    }
    if (base == null) {
      fail("-base is required");
    }
    final boolean close = !keepalive;
    final long connect = connectMillis;
    final Duration network = Duration.ofMillis(networkMillis);

    Thread writer = new Thread(BalancebenchJdk::writeLines, "writer");
    writer.start();
    // Load the client's classes before the first request, so JVM start-up is not measured as latency.
    HttpRequest.newBuilder(URI.create(base + "/")).build();
    newClient(connect);
    out.add("ready");
    ExecutorService threads = Executors.newCachedThreadPool(r -> {
      Thread thread = new Thread(r, "request");
      thread.setDaemon(true);
      return thread;
    });
    Map<String, Pool> pools = new HashMap<>();
    Phaser all = new Phaser(1);
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null) {
      String[] fields = line.split("\t", -1);
      if (fields[0].equals("new") && fields.length == 2) {
        pools.put(fields[1], new Pool(newClient(connect)));
      } else if (fields[0].equals("get") && fields.length == 4) {
        Pool pool = pools.get(fields[2]);
        if (pool == null) {
          fail("get on unknown pool " + fields[2]);
        }
        HttpRequest.Builder builder = HttpRequest.newBuilder(URI.create(base + fields[3])).timeout(network).GET();
        if (close) {
          // A restricted header: allowed by -Djdk.httpclient.allowRestrictedHeaders=connection. The JDK
          // then closes the connection after the response instead of returning it to its pool.
          builder.header("Connection", "close");
        }
        HttpRequest request = builder.build();
        String req = fields[1];
        pool.inflight.register();
        all.register();
        threads.execute(() -> {
          try {
            get(pool, request, req);
          } finally {
            all.arriveAndDeregister();
          }
        });
      } else if (fields[0].equals("close") && fields.length == 2) {
        pools.remove(fields[1]);
      } else {
        fail("bad command " + line);
      }
    }
    all.arriveAndAwaitAdvance();
    out.add(END);
    writer.join();
    System.exit(0);
  }
}
