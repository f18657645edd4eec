/* The intent server's routes (serve/server_internal.h): one table from
 * which routing, the role check, the /metrics labels and the 404 and 405
 * answers all come, and the checks every request passes before its
 * handler. The endpoints themselves are described in serve/serve.h. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/text.h"
#include "serve/server_internal.h"

enum { ROLE_I = FINCH_ROLE_INTEGRATION, ROLE_L = FINCH_ROLE_LABELER, ROLE_A = FINCH_ROLE_ADMIN };

/* Every endpoint, once: methods, path template, {id} as digits only,
 * roles, needs-database, metrics label (NULL: the template), handler. A path
 * may have several rows, one per set of methods; the first row whose path
 * and method match answers. /metrics needs the admin role only in database
 * mode: without a database no request carries a key. The first row's label
 * is always listed in /metrics, even before its first request. */
static const serve_route serve_routes[] = {
    {SERVE_M_POST, "/v1/intent", 0, ROLE_I, 0, NULL, serve__intent},
    {SERVE_M_GET | SERVE_M_HEAD, "/healthz", 0, 0, 0, NULL, serve__health},
    {SERVE_M_POST, "/v1/conversations/{id}/turns", 0, ROLE_I, 1, NULL, serve__turn},
    {SERVE_M_GET, "/v1/labeling/tasks", 0, ROLE_L, 1, NULL, serve__tasks},
    {SERVE_M_POST, "/v1/labeling/tasks/{id}", 1, ROLE_L, 1, NULL, serve__task_label},
    {SERVE_M_GET, "/v1/labeling/stats", 0, ROLE_L, 1, NULL, serve__stats},
    {SERVE_M_GET, "/v1/rollout", 0, ROLE_I | ROLE_L | ROLE_A, 1, NULL, serve__rollout_get},
    {SERVE_M_POST, "/v1/rollout", 0, ROLE_A, 1, NULL, serve__rollout_post},
    {SERVE_M_GET, "/metrics", 0, ROLE_A, 0, NULL, serve__metrics_get},
    {SERVE_M_POST, "/v1/admin/reload", 0, ROLE_A, 1, NULL, serve__reload_post},
};
enum { SERVE_N_ROUTES = sizeof serve_routes / sizeof serve_routes[0] };

/* --- labels ---------------------------------------------------------------- */

/* Each row's label index, and the labels: distinct, in table order, then
 * "other". Computed once. */
static size_t route_label_of[SERVE_N_ROUTES];
static const char *route_labels[SERVE_N_ROUTES + 1];
static size_t route_n_labels;
static pthread_once_t route_labels_once = PTHREAD_ONCE_INIT;

static const char *route_label(const serve_route *r) { return r->metric ? r->metric : r->path; }

static void route_labels_init(void) {
  for (size_t i = 0; i < SERVE_N_ROUTES; i++) {
    const char *name = route_label(&serve_routes[i]);
    size_t k = 0;
    while (k < route_n_labels && strcmp(route_labels[k], name) != 0) k++;
    if (k == route_n_labels) route_labels[route_n_labels++] = name;
    route_label_of[i] = k;
  }
  route_labels[route_n_labels++] = "other";
}

size_t serve__route_labels(const char **names, size_t max) {
  pthread_once(&route_labels_once, route_labels_init);
  size_t n = route_n_labels < max ? route_n_labels : max;
  memcpy(names, route_labels, n * sizeof *names);
  return n;
}

/* --- routing --------------------------------------------------------------- */

static unsigned route_method_bit(const char *method) {
  return strcmp(method, "GET") == 0 ? SERVE_M_GET : strcmp(method, "HEAD") == 0 ? SERVE_M_HEAD
                                                  : strcmp(method, "POST") == 0 ? SERVE_M_POST
                                                                                : 0;
}

/* 1 when url matches r's template; {id} goes to arg (empty when longer
 * than SERVE_ID_MAX, so that the handler refuses it as malformed). */
static int route_match(const serve_route *r, const char *url, char arg[SERVE_ID_MAX + 1]) {
  static const char id[] = "{id}";
  const char *t = r->path, *u = url;
  arg[0] = '\0';
  while (*t) {
    if (strncmp(t, id, sizeof id - 1) == 0) {
      size_t n = strcspn(u, "/");
      if (n == 0 || (r->id_digits && (n > 20 || strspn(u, "0123456789") < n))) return 0;
      size_t k = n <= SERVE_ID_MAX ? n : 0;
      memcpy(arg, u, k);
      arg[k] = '\0';
      u += n;
      t += sizeof id - 1;
    } else if (*t++ != *u++) {
      return 0;
    }
  }
  return *u == '\0';
}

void serve__route(serve_request *req, const char *url, const char *method) {
  pthread_once(&route_labels_once, route_labels_init);
  unsigned m = route_method_bit(method);
  req->route = NULL;
  req->path = NULL;
  req->allow = 0;
  req->metric = route_n_labels - 1; /* other */
  req->arg[0] = '\0';
  for (size_t i = 0; i < SERVE_N_ROUTES; i++) {
    const serve_route *r = &serve_routes[i];
    char arg[SERVE_ID_MAX + 1];
    if (!route_match(r, url, arg)) continue;
    if (!req->path) { /* a wrong method on a known path is counted under that path */
      req->path = r->path;
      req->metric = route_label_of[i];
    }
    req->allow |= r->methods;
    if (!req->route && (r->methods & m)) {
      req->route = r;
      req->metric = route_label_of[i];
      memcpy(req->arg, arg, sizeof arg);
    }
  }
  req->post = req->route && m == SERVE_M_POST;
}

/* --- answers before a handler ------------------------------------------------ */

/* The URL goes back to the client only when it is short, valid UTF-8. */
static enum MHD_Result route_not_found(struct MHD_Connection *conn, const char *url) {
  size_t n = strlen(url);
  if (n <= 200 && finch_utf8_valid(url, n, NULL))
    return serve__reply_error(conn, MHD_HTTP_NOT_FOUND, NULL, "no such endpoint: %s", url);
  return serve__reply_error(conn, MHD_HTTP_NOT_FOUND, NULL, "no such endpoint");
}

static enum MHD_Result route_not_allowed(struct MHD_Connection *conn, const serve_request *req, const char *method) {
  static const struct {
    unsigned bit;
    const char *name;
  } names[] = {{SERVE_M_GET, "GET"}, {SERVE_M_HEAD, "HEAD"}, {SERVE_M_POST, "POST"}};
  char allow[32] = "";
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (req->allow & names[i].bit)
      snprintf(allow + strlen(allow), sizeof allow - strlen(allow), "%s%s", allow[0] ? ", " : "", names[i].name);
  return serve__reply_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, allow, "method %s not allowed on %s; use %s", method,
                            req->path, allow);
}

/* The ?deployment= of the request, else the server's; NULL when malformed. */
static const char *route_deployment(finch_server *srv, struct MHD_Connection *conn) {
  const char *d = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "deployment");
  if (!d) return srv->deployment;
  return serve__id_ok(d, 100) ? d : NULL;
}

/* Database mode: deployment, key, role, rate, size, then the handler, on a
 * slot held throughout. */
static enum MHD_Result route_dispatch_db(serve_call *c, const char *method) {
  finch_server *srv = c->srv;
  struct MHD_Connection *conn = c->conn;
  const serve_request *req = c->req;
  c->deployment = route_deployment(srv, conn);
  if (!c->deployment)
    return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                              "deployment must be 1 to 100 characters of A-Z a-z 0-9 . _ : -");
  c->sl = serve__slot_get(srv);
  enum MHD_Result ret;
  finch_principal who;
  finch_err err = {0};
  size_t klen = 0;
  const char *key =
      finch_auth_bearer(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), &klen);
  finch_status st = key ? finch_auth_lookup(c->sl->conn, key, klen, &who, &err) : FINCH_ENOTFOUND;
  double retry = 0;
  if (!key) {
    ret = serve__reply_error_h(conn, MHD_HTTP_UNAUTHORIZED, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer",
                               "missing API key: send \"Authorization: Bearer <key>\"");
  } else if (st == FINCH_ENOTFOUND) {
    ret = serve__reply_error_h(conn, MHD_HTTP_UNAUTHORIZED, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer",
                               "unknown or revoked API key");
  } else if (st) {
    ret = serve__db_failed(conn, "key lookup", &err);
  } else if (!finch_role_allows(who.role, req->route->roles)) {
    ret = serve__reply_error(conn, MHD_HTTP_FORBIDDEN, NULL, "a key of role %s may not use %s %s",
                             finch_role_name(who.role), method, req->path);
  } else if (srv->rl && !finch_ratelimit_take(srv->rl, who.id, (double)finch_clock_ns() / 1e9, &retry)) {
    char after[32];
    snprintf(after, sizeof after, "%.0f", ceil(retry));
    ret = serve__reply_error_h(conn, MHD_HTTP_TOO_MANY_REQUESTS, MHD_HTTP_HEADER_RETRY_AFTER, after,
                               "rate limit exceeded for this key; retry after %s s", after);
  } else if (req->too_big) {
    ret = serve__reply_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL, "request body exceeds the limit of %zu bytes",
                             srv->max_body);
  } else {
    c->who = &who;
    ret = req->route->handler(c);
  }
  serve__slot_put(srv, c->sl);
  return ret;
}

enum MHD_Result serve__dispatch(finch_server *srv, struct MHD_Connection *conn, serve_request *req, const char *url,
                                const char *method) {
  serve_call c = {.srv = srv, .conn = conn, .req = req};
  if (req->phase == SERVE_PHASE_DONE) return req->route->handler(&c); /* back from the batcher */
  if (!req->route) return req->allow ? route_not_allowed(conn, req, method) : route_not_found(conn, url);
  if (!req->route->roles) return req->route->handler(&c);
  if (srv->has_db) return route_dispatch_db(&c, method);
  if (req->route->needs_db)
    return serve__reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
                              "%s needs finch's database, and this server runs without one (start finch serve "
                              "with --database-url or an embedded cluster under FINCH_HOME)",
                              req->path);
  if (req->too_big)
    return serve__reply_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL, "request body exceeds the limit of %zu bytes",
                              srv->max_body);
  return req->route->handler(&c);
}
