package webapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/haita/haita/checkout"
	"github.com/haita/haita/httpcc"
)

// writeJSON writes v as the JSON response, with "Cache-Control: no-store"
// unless the handler set a Cache-Control already.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if w.Header().Get("Cache-Control") == "" {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// decodeJSON reads a JSON object of at most 1 MiB into v, rejecting unknown
// fields and trailing data. The error is written as the response.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			problem(w, ptUnsupportedMedia, "send the body as application/json", nil)
			return false
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the JSON object")
	}
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the JSON object")
		}
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			problem(w, ptTooLarge, "the body is larger than 1 MiB", nil)
			return false
		}
		problem(w, ptBadRequest, "invalid JSON: "+jsonError(err), nil)
		return false
	}
	return true
}

// jsonError describes a decoding error in terms of the JSON the client
// sent, without the Go types it was decoded into.
func jsonError(err error) string {
	var (
		se *json.SyntaxError
		te *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends too early"
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at offset %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.As(err, &te) && te.Field == "":
		return "the body must be a JSON object, not " + jsonKind(te.Value)
	case errors.As(err, &te):
		want := "a string"
		if te.Type != nil && te.Type.Kind() != reflect.String {
			want = "of another type"
		}
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, want, jsonKind(te.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind names the kind of a JSON value as UnmarshalTypeError reports it.
func jsonKind(v string) string {
	switch v {
	case "object", "array":
		return "an " + v
	case "number", "string", "bool":
		return "a " + v
	}
	return v
}

// writeErr maps an error of the store or the checkout manager to a problem
// response.
func (a *App) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var (
		ce  *conflictError
		he  *checkout.HeldError
		be  *checkout.BrokenError
		le  *httpcc.LockedError
		hce *httpcc.HeaderError
		pe  *httpcc.PreconditionError
		re  *httpcc.RequiredError
	)
	switch {
	case errors.Is(err, errNotFound):
		problem(w, ptNotFound, "no document with this id", nil)
	case errors.Is(err, errInvalid), errors.Is(err, checkout.ErrInvalid):
		problem(w, ptInvalid, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "webapp: invalid input: "), "checkout: "), nil)
	case errors.As(err, &ce):
		httpcc.WriteError(w, &httpcc.PreconditionError{Current: a.sent(ce.Current), Header: "If-Match", Type: ptPreconditionFailed.URI()})
	case errors.As(err, &pe):
		e := *pe
		e.Type = ptPreconditionFailed.URI()
		e.Current.LastModified = a.lastModified(e.Current.LastModified)
		httpcc.WriteError(w, &e)
	case errors.As(err, &re):
		e := *re
		e.Type = ptPreconditionRequired.URI()
		httpcc.WriteError(w, &e)
	case errors.As(err, &he):
		httpcc.WriteError(w, &httpcc.LockedError{Holder: he.Holder, Since: he.Since, Until: he.Until, Type: ptLocked.URI()})
	case errors.As(err, &le):
		e := *le
		e.Type = ptLocked.URI()
		httpcc.WriteError(w, &e)
	case errors.As(err, &hce):
		e := *hce
		e.Type = ptMalformedHeader.URI()
		httpcc.WriteError(w, &e)
	case errors.Is(err, errCheckoutRequired):
		problem(w, ptCheckoutRequired, "this document is pessimistic: check it out (POST /api/documents/{id}/checkout) and send the token in the Checkout-Token header", nil)
	case errors.Is(err, errNotPessimistic):
		problem(w, ptNotPessimistic, "this document does not use checkouts; save it with If-Match", nil)
	case errors.As(err, &be):
		problem(w, ptCheckoutBroken, fmt.Sprintf("your checkout was broken by %s", be.By), map[string]any{
			"broken_by": be.By, "broken_at": be.At, "reason": be.Reason})
	case errors.Is(err, checkout.ErrExpired):
		problem(w, ptCheckoutExpired, "your checkout has expired; check the document out again", nil)
	case errors.Is(err, checkout.ErrNotHeld):
		problem(w, ptCheckoutNotHeld, "this token holds no checkout of the document", nil)
	default:
		a.serverError(w, r, err)
	}
}

func (a *App) apiMe(w http.ResponseWriter, r *http.Request) {
	p, _ := userOf(r)
	writeJSON(w, http.StatusOK, p.User)
}

func (a *App) apiList(w http.ResponseWriter, r *http.Request) {
	docs, err := a.listDocs(r.Context())
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	out := make([]docEvent, 0, len(docs))
	for _, d := range docs {
		ev := docEvent{Document: d}
		if d.Policy == Pessimistic {
			c, ok, err := a.co.Get(r.Context(), d.ID)
			if err != nil {
				a.writeErr(w, r, err)
				return
			}
			if ok {
				ev.Checkout = a.toCheckoutJSON(c, false)
			}
		}
		out = append(out, ev)
	}
	writeJSON(w, http.StatusOK, map[string]any{"documents": out})
}

// apiGet reads a document: 200 with ETag, Last-Modified and
// "Cache-Control: private, no-cache" (a client may keep it and revalidate
// with If-None-Match or If-Modified-Since), or 304 with the same fields.
func (a *App) apiGet(w http.ResponseWriter, r *http.Request) {
	d, err := a.getDoc(r.Context(), a.db, r.PathValue("id"))
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "private, no-cache")
	if err := httpcc.Check(r, d.state()); err != nil {
		httpcc.SetValidators(w.Header(), a.sent(d))
		a.writeErr(w, r, err)
		return
	}
	httpcc.SetValidators(w.Header(), a.sent(d))
	writeJSON(w, http.StatusOK, d)
}

// putBody is the body of PUT /api/documents/{id}.
type putBody struct {
	Title  *string `json:"title"`
	Body   *string `json:"body"`
	Policy *string `json:"policy"`
}

// apiPut creates a document ("If-None-Match: *") or updates one. Every
// precondition the request carries is evaluated, in the order of RFC 9110
// §13.2.2, against the document as locked by the write's transaction, and
// the write is conditional on the state that was evaluated. An optimistic
// document requires If-Match or a valid If-Unmodified-Since (428 without);
// a pessimistic one the Checkout-Token of the caller's own checkout;
// last-write-wins requires neither.
func (a *App) apiPut(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var in putBody
	if !decodeJSON(w, r, &in) {
		return
	}
	p, _ := userOf(r)
	cur, err := a.getDoc(r.Context(), a.db, id)
	if errors.Is(err, errNotFound) {
		a.apiCreate(w, r, id, in)
		return
	}
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	if in.Policy != nil {
		if inm := r.Header.Values("If-None-Match"); len(inm) == 1 && strings.TrimSpace(inm[0]) == "*" {
			// A create that lost to another: "If-None-Match: *" is false.
			httpcc.WriteError(w, &httpcc.PreconditionError{Current: a.sent(cur), Header: "If-None-Match", Type: ptAlreadyExists.URI()})
			return
		}
		problem(w, ptInvalid, "the policy of a document is fixed when it is created", nil)
		return
	}
	token := checkoutToken(r)
	switch cur.Policy {
	case Optimistic:
		if err := (httpcc.Policy{}).Require(r); err != nil {
			a.writeErr(w, r, err)
			return
		}
	case Pessimistic:
		if token == "" {
			a.writeErr(w, r, a.requireCheckout(r, id))
			return
		}
	}
	d, err := a.saveDoc(r.Context(), p.User.Name, id, saveInput{Title: in.Title, Body: in.Body, Token: token,
		Cond: preconditions(r), Unmodified: unmodifiedSince(r)})
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	httpcc.SetValidators(w.Header(), a.sent(d))
	writeJSON(w, http.StatusOK, d)
}

// apiCreate creates document id, which did not exist a moment ago, when
// the request carries "If-None-Match: *" (and no If-Match, which cannot
// hold for a document that does not exist). Without it the answer is 404:
// RFC 9110 §13.2.1 has preconditions ignored when the request would fail
// anyway.
func (a *App) apiCreate(w http.ResponseWriter, r *http.Request, id string, in putBody) {
	inm := r.Header.Values("If-None-Match")
	if len(inm) != 1 || strings.TrimSpace(inm[0]) != "*" {
		problem(w, ptNotFound, `no document with this id; to create one send "If-None-Match: *"`, nil)
		return
	}
	if err := httpcc.Check(r, httpcc.State{}); err != nil {
		a.writeErr(w, r, err)
		return
	}
	if in.Title == nil || in.Body == nil || in.Policy == nil {
		problem(w, ptInvalid, "creating a document needs title, body and policy", nil)
		return
	}
	p, _ := userOf(r)
	d, err := a.createDoc(r.Context(), p.User.Name, Document{ID: id, Title: *in.Title, Body: *in.Body, Policy: *in.Policy})
	var ce *conflictError
	if errors.As(err, &ce) {
		httpcc.WriteError(w, &httpcc.PreconditionError{Current: a.sent(ce.Current), Header: "If-None-Match", Type: ptAlreadyExists.URI()})
		return
	}
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	httpcc.SetValidators(w.Header(), a.sent(d))
	w.Header().Set("Location", "/api/documents/"+d.ID)
	writeJSON(w, http.StatusCreated, d)
}

// preconditions returns the evaluation of r's conditional headers that a
// save or delete runs against the document it has locked.
func preconditions(r *http.Request) func(Document) error {
	return func(d Document) error { return httpcc.Check(r, d.state()) }
}

// unmodifiedSince returns the If-Unmodified-Since date a write is
// conditional on: the zero time when If-Match is present (RFC 9110 §13.2.2
// evaluates it instead) or the field is not one valid HTTP-date (§13.1.4).
func unmodifiedSince(r *http.Request) time.Time {
	if len(r.Header.Values("If-Match")) > 0 {
		return time.Time{}
	}
	t, _ := httpcc.ValidDate(r.Header, "If-Unmodified-Since")
	return t
}

// requireCheckout is the error for a write to a pessimistic document
// without a checkout token: 423 if someone holds it, else 428.
func (a *App) requireCheckout(r *http.Request, id string) error {
	p, _ := userOf(r)
	if err := a.lockedBy(r.Context(), id, p.User.Name); err != nil {
		return err
	}
	return errCheckoutRequired
}

// apiDelete deletes a document. Every policy requires a precondition
// (If-Match, a valid If-Unmodified-Since or "If-None-Match: *"), evaluated
// as for apiPut; a pessimistic document also the caller's Checkout-Token.
func (a *App) apiDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := a.getDoc(r.Context(), a.db, id); err != nil {
		a.writeErr(w, r, err)
		return
	}
	if err := (httpcc.Policy{}).Require(r); err != nil {
		a.writeErr(w, r, err)
		return
	}
	p, _ := userOf(r)
	err := a.deleteDoc(r.Context(), p.User.Name, id, deleteInput{Token: checkoutToken(r), Cond: preconditions(r), Unmodified: unmodifiedSince(r)})
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// pessimisticDoc loads the document and checks it uses checkouts.
func (a *App) pessimisticDoc(w http.ResponseWriter, r *http.Request) (Document, bool) {
	d, err := a.getDoc(r.Context(), a.db, r.PathValue("id"))
	if err == nil && d.Policy != Pessimistic {
		err = errNotPessimistic
	}
	if err != nil {
		a.writeErr(w, r, err)
		return Document{}, false
	}
	return d, true
}

func (a *App) apiGetCheckout(w http.ResponseWriter, r *http.Request) {
	d, ok := a.pessimisticDoc(w, r)
	if !ok {
		return
	}
	c, ok, err := a.co.Get(r.Context(), d.ID)
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	if !ok {
		problem(w, ptNotCheckedOut, "the document is not checked out", nil)
		return
	}
	writeJSON(w, http.StatusOK, a.toCheckoutJSON(c, false))
}

// apiAcquire checks the document out for the caller: 201 with the token, or
// 423 naming the holder. Acquiring again as the holder renews the checkout.
func (a *App) apiAcquire(w http.ResponseWriter, r *http.Request) {
	d, ok := a.pessimisticDoc(w, r)
	if !ok {
		return
	}
	p, _ := userOf(r)
	c, err := a.co.Acquire(r.Context(), d.ID, p.User.Name)
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	a.bump(r.Context(), d.ID)
	writeJSON(w, http.StatusCreated, a.toCheckoutJSON(c, true))
}

func checkoutToken(r *http.Request) string { return r.Header.Get("Checkout-Token") }

// ownToken returns the request's Checkout-Token after checking that it is
// not the token of another user's checkout of document id: a token works
// only for the user who took the checkout. Otherwise it writes the error
// (400 without a token, 423 naming the holder) and returns false.
func (a *App) ownToken(w http.ResponseWriter, r *http.Request, id string) (string, bool) {
	tok := checkoutToken(r)
	if tok == "" {
		problem(w, ptBadRequest, "send the checkout token in the Checkout-Token header", nil)
		return "", false
	}
	p, _ := userOf(r)
	owner, ok, err := a.tokenOwner(r.Context(), a.db, id, tok)
	if err != nil {
		a.writeErr(w, r, err)
		return "", false
	}
	if ok && owner != p.User.Name {
		a.writeErr(w, r, &httpcc.LockedError{Holder: owner})
		return "", false
	}
	return tok, true
}

func (a *App) apiHeartbeat(w http.ResponseWriter, r *http.Request) {
	d, ok := a.pessimisticDoc(w, r)
	if !ok {
		return
	}
	tok, ok := a.ownToken(w, r, d.ID)
	if !ok {
		return
	}
	c, err := a.co.Heartbeat(r.Context(), d.ID, tok)
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a.toCheckoutJSON(c, true))
}

func (a *App) apiRelease(w http.ResponseWriter, r *http.Request) {
	d, ok := a.pessimisticDoc(w, r)
	if !ok {
		return
	}
	tok, ok := a.ownToken(w, r, d.ID)
	if !ok {
		return
	}
	if err := a.co.Release(r.Context(), d.ID, tok); err != nil {
		a.writeErr(w, r, err)
		return
	}
	a.bump(r.Context(), d.ID)
	w.WriteHeader(http.StatusNoContent)
}

// breakBody is the body of POST .../checkout/break.
type breakBody struct {
	Reason string `json:"reason"`
}

func (a *App) apiBreak(w http.ResponseWriter, r *http.Request) {
	p, _ := userOf(r)
	if !p.User.Admin {
		problem(w, ptForbidden, "only an administrator can break a checkout", nil)
		return
	}
	var in breakBody
	if r.ContentLength != 0 && !decodeJSON(w, r, &in) {
		return
	}
	d, ok := a.pessimisticDoc(w, r)
	if !ok {
		return
	}
	c, err := a.co.Break(r.Context(), d.ID, p.User.Name, in.Reason)
	if errors.Is(err, checkout.ErrNotHeld) {
		problem(w, ptNotCheckedOut, "the document is not checked out", nil)
		return
	}
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	a.bump(r.Context(), d.ID)
	writeJSON(w, http.StatusOK, a.toCheckoutJSON(c, false))
}

func (a *App) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	b, err := assets.ReadFile("assets/openapi.json")
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	_, _ = w.Write(b)
}
