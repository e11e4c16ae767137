// Package webapp is the sample application that haita serve runs: shared
// documents edited in the browser under one of three policies each
// (last-write-wins, optimistic with versions and a conflict screen,
// pessimistic with checkouts), live updates over server-sent events, and a
// JSON API with ETag / If-Match / If-None-Match, Last-Modified /
// If-Unmodified-Since / If-Modified-Since, 304, 412, 428 and 423, described
// by an OpenAPI 3.1 document at /api/openapi.json. Every precondition a
// request carries is evaluated, in the order of RFC 9110 §13.2.2, against
// the document's row locked by the write's transaction, and the write is
// conditional on what was evaluated (docs/conditional-requests.md). Errors
// are RFC 9457 problem documents with a type URI per kind of error.
//
// It is built on the library: versioned writes from package sqlcc,
// conditional requests from package httpcc, checkouts from package
// checkout, Idempotency-Key on its non-idempotent POSTs from package
// idempotency (the page forms carry a key each, so a double click or a
// resubmitted form has one effect; docs/idempotency.md lists the routes).
// All state lives in the database (SQLite, PostgreSQL or
// MySQL), so several processes on one PostgreSQL or MySQL database serve
// the same documents safely, and each sees the others' changes by polling.
//
// Security: passwords are bcrypt hashes; sessions are random tokens kept
// hashed in the database, in HttpOnly SameSite=Lax cookies; failed sign-ins
// slow further attempts per account and per client address; every
// state-changing request passes net/http's CrossOriginProtection and, when
// it comes with a session, must carry the session's CSRF token; API
// clients authenticate with a per-user bearer token. A checkout token works
// only for the user who took the checkout. All SQL is constant
// text with bound parameters.
//
// An [App] is an http.Handler, safe for concurrent use; create it with
// [New] and Close it when done.
package webapp
