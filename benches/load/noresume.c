/*
 * LD_PRELOAD shim for wrk in the full-handshake test: no TLS session resumption.
 *
 * wrk reuses one SSL object per connection slot and resets it with SSL_clear() on
 * reconnect; SSL_clear() keeps the last session, so wrk resumes whenever the server
 * issued a ticket. Servers configured without tickets (nginx, haproxy, envoy in this
 * bench) cannot be resumed, but a server that issues tickets by default would then be
 * measured on cheap resumptions instead of full handshakes. Dropping the session
 * after SSL_clear() makes every connection a full handshake for every target alike.
 * bench.py checks that the shim is effective (see `check_noresume`).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_set_session(SSL *s, SSL_SESSION *session);

int SSL_clear(SSL *s) {
    static int (*real_clear)(SSL *);
    if (real_clear == NULL) {
        real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
        if (real_clear == NULL) {
            return 0;
        }
    }
    int r = real_clear(s);
    SSL_set_session(s, NULL);
    return r;
}
