// Sends balancebench's requests with OkHttp's own client and ConnectionPool (Debian's libokhttp-java).
//
// balancebench's Locust users keep the load model (closed or open loop, pacing, warm-up, the request
// budget) and write the records; this program only does what a Java service does when it calls another
// service: a synchronous Call.execute() on an OkHttpClient whose ConnectionPool is set from the pool
// policy, one thread per request in flight, as an application's request threads would. One command per
// line on stdin, one answer per request on stdout, tab-separated:
//
//   new   <pool>                 an OkHttpClient with a ConnectionPool of its own
//   get   <req> <pool> <path>    GET base+path on that pool; answered asynchronously
//   close <pool>                 evict the pool's idle connections once its requests are done
//
// It prints "ready" once OkHttp's classes are loaded and it takes commands. Answer: req status error pod node client_conn server_conn conn_request latency_us length detail.
// client_conn numbers the connections OkHttp used (1, 2, ...), taken in a network interceptor from
// Chain.connection(), so it is the connection OkHttp's pool actually chose.

import java.io.BufferedReader;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.net.ConnectException;
import java.net.ProtocolException;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.HashMap;
import java.util.Map;
import java.util.WeakHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.Phaser;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import okhttp3.Connection;
import okhttp3.ConnectionPool;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.Response;

public final class BalancebenchOkHttp {
  private static final String CONN_HEADER = "X-Balancebench-Client-Conn";
  private static final AtomicLong connections = new AtomicLong();
  private static final Map<Connection, Long> ids = Collections.synchronizedMap(new WeakHashMap<>());
  private static final LinkedBlockingQueue<String> out = new LinkedBlockingQueue<>();
  private static final String END = "";

  private static final class Pool {
    final OkHttpClient client;
    final Phaser inflight = new Phaser(1);

    Pool(OkHttpClient client) {
      this.client = client;
    }
  }

  private static long idOf(Connection connection) {
    return ids.computeIfAbsent(connection, c -> connections.incrementAndGet());
  }

  private static String clean(String text) {
    return text == null ? "" : text.replace('\t', ' ').replace('\n', ' ').replace('\r', ' ');
  }

  private static String errorKind(IOException error) {
    String message = String.valueOf(error.getMessage()).toLowerCase();
    if (error instanceof ConnectException || message.startsWith("failed to connect")) {
      return "connect";
    }
    if (error instanceof SocketTimeoutException) {
      return message.contains("connect") ? "connect" : "timeout";
    }
    if (error instanceof ProtocolException) {
      return "protocol";
    }
    if (error instanceof SocketException
        || error instanceof EOFException
        || message.contains("unexpected end of stream")
        || message.contains("reset")) {
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

  private static void get(Pool pool, Request request, String req) {
    long start = System.nanoTime();
    try (Response response = pool.client.newCall(request).execute()) {
      byte[] body = response.body() == null ? new byte[0] : response.body().bytes();
      long latency = (System.nanoTime() - start) / 1000;
      out.add(
          String.join(
              "\t",
              req,
              Integer.toString(response.code()),
              "",
              clean(response.header("X-Pod-Name", "")),
              clean(response.header("X-Node-Name", "")),
              number(response.header(CONN_HEADER), "-1"),
              number(response.header("X-Conn-Id"), "-1"),
              number(response.header("X-Conn-Request"), "0"),
              Long.toString(latency),
              Integer.toString(body.length),
              ""));
    } catch (IOException error) {
      long latency = (System.nanoTime() - start) / 1000;
      out.add(
          String.join(
              "\t",
              req, "0", errorKind(error), "", "", "-1", "-1", "0", Long.toString(latency), "0",
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
    System.err.println("bbclient-okhttp: " + message);
    System.exit(2);
  }

  public static void main(String[] args) throws Exception {
    String base = null;
    boolean keepalive = true;
    int maxIdle = 5;
    long idleNanos = TimeUnit.MINUTES.toNanos(5);
    long connectMillis = 5000;
    long networkMillis = 30000;
    for (int i = 0; i + 1 < args.length; i += 2) {
      String value = args[i + 1];
      switch (args[i]) {
        case "-base": base = value.replaceAll("/+$", ""); break;
        case "-keepalive": keepalive = Boolean.parseBoolean(value); break;
        case "-max-idle": maxIdle = Integer.parseInt(value) < 0 ? Integer.MAX_VALUE : Integer.parseInt(value); break;
        case "-idle-timeout-ms": idleNanos = Long.parseLong(value) <= 0 ? Long.MAX_VALUE / 4 : TimeUnit.MILLISECONDS.toNanos(Long.parseLong(value)); break;
        case "-connect-timeout-ms": connectMillis = Long.parseLong(value); break;
        case "-network-timeout-ms": networkMillis = Long.parseLong(value); break;
        default: fail("unknown option " + args[i]);
      }
    }
    if (base == null) {
      fail("-base is required");
    }
    final boolean close = !keepalive;
    final int idleCap = maxIdle;
    final long idle = idleNanos;
    final long connect = connectMillis;
    final long network = networkMillis;

    Thread writer = new Thread(BalancebenchOkHttp::writeLines, "writer");
    writer.start();
    // Load OkHttp's classes before the first request, so JVM start-up is not measured as latency.
    new OkHttpClient.Builder().build().newCall(new Request.Builder().url(base + "/").build());
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
        OkHttpClient client = new OkHttpClient.Builder()
            .connectionPool(new ConnectionPool(idleCap, idle, TimeUnit.NANOSECONDS))
            .connectTimeout(connect, TimeUnit.MILLISECONDS)
            .readTimeout(network, TimeUnit.MILLISECONDS)
            .writeTimeout(network, TimeUnit.MILLISECONDS)
            .addNetworkInterceptor(chain -> {
              long id = idOf(chain.connection());
              return chain.proceed(chain.request()).newBuilder().header(CONN_HEADER, Long.toString(id)).build();
            })
            .build();
        pools.put(fields[1], new Pool(client));
      } else if (fields[0].equals("get") && fields.length == 4) {
        Pool pool = pools.get(fields[2]);
        if (pool == null) {
          fail("get on unknown pool " + fields[2]);
        }
        Request.Builder builder = new Request.Builder().url(base + fields[3]);
        if (close) {
          builder.header("Connection", "close");
        }
        Request request = builder.build();
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
        Pool pool = pools.remove(fields[1]);
        if (pool != null) {
          threads.execute(() -> {
            pool.inflight.arriveAndAwaitAdvance();
            pool.client.connectionPool().evictAll();
          });
        }
      } else {
        fail("bad command " + line);
      }
    }
    all.arriveAndAwaitAdvance();
    for (Pool pool : pools.values()) {
      pool.client.connectionPool().evictAll();
    }
    out.add(END);
    writer.join();
    System.exit(0);
  }
}
