-- wrk script of the TLS passthrough scenarios (pt-*): connect to 127.0.0.1 whatever
-- the URL's host is. wrk still sends that host as SNI (and in Host:), and the
-- proxies route by it; Istio wants a fully qualified name there, which /etc/hosts
-- does not have. No request/response function: wrk's per-request path stays the
-- same as without a script.
function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup("127.0.0.1", service)
end
