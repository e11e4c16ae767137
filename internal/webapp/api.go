package webapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/haita/haita/checkout"
	"github.com/haita/haita/httpcc"
)

// problem writes an RFC 9457 problem document, in the shape httpcc writes.
func problem(w http.ResponseWriter, status int, detail string, ext map[string]any) {
	p := map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail}
	for k, v := range ext {
		p[k] = v
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
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
			problem(w, http.StatusUnsupportedMediaType, "send the body as application/json", nil)
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
			problem(w, http.StatusRequestEntityTooLarge, "the body is larger than 1 MiB", nil)
			return false
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("empty body")
		}
		problem(w, http.StatusBadRequest, "invalid JSON: "+err.Error(), nil)
		return false
	}
	return true
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
	)
	switch {
	case errors.Is(err, errNotFound):
		problem(w, http.StatusNotFound, "no document with this id", nil)
	case errors.Is(err, errInvalid), errors.Is(err, checkout.ErrInvalid):
		problem(w, http.StatusUnprocessableEntity, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "webapp: invalid input: "), "checkout: "), nil)
	case errors.As(err, &ce):
		httpcc.WriteError(w, &httpcc.PreconditionError{Current: ce.Current.state(), Header: "If-Match"})
	case errors.As(err, &he):
		httpcc.WriteError(w, &httpcc.LockedError{Holder: he.Holder, Since: he.Since, Until: he.Until})
	case errors.As(err, &le), errors.As(err, &hce):
		httpcc.WriteError(w, err)
	case errors.Is(err, errCheckoutRequired):
		problem(w, http.StatusPreconditionRequired, "this document is pessimistic: check it out (POST /api/documents/{id}/checkout) and send the token in the Checkout-Token header", nil)
	case errors.Is(err, errNotPessimistic):
		problem(w, http.StatusConflict, "this document does not use checkouts; save it with If-Match", nil)
	case errors.As(err, &be):
		problem(w, http.StatusConflict, fmt.Sprintf("your checkout was broken by %s", be.By), map[string]any{
			"broken_by": be.By, "broken_at": be.At, "reason": be.Reason})
	case errors.Is(err, checkout.ErrExpired):
		problem(w, http.StatusConflict, "your checkout has expired; check the document out again", nil)
	case errors.Is(err, checkout.ErrNotHeld):
		problem(w, http.StatusConflict, "this token holds no checkout of the document", nil)
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

func (a *App) apiGet(w http.ResponseWriter, r *http.Request) {
	d, err := a.getDoc(r.Context(), a.db, r.PathValue("id"))
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	if err := httpcc.Check(r, d.state()); err != nil {
		httpcc.WriteError(w, err)
		return
	}
	httpcc.SetValidators(w.Header(), d.state())
	writeJSON(w, http.StatusOK, d)
}

// putBody is the body of PUT /api/documents/{id}.
type putBody struct {
	Title  *string `json:"title"`
	Body   *string `json:"body"`
	Policy *string `json:"policy"`
}

// apiPut creates a document (If-None-Match: *) or updates one. An
// optimistic document requires If-Match (428 without it); a pessimistic one
// requires the Checkout-Token header; last-write-wins takes either or none.
func (a *App) apiPut(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var in putBody
	if !decodeJSON(w, r, &in) {
		return
	}
	inm := strings.TrimSpace(r.Header.Get("If-None-Match"))
	ifMatch := r.Header.Values("If-Match")
	p, _ := userOf(r)
	if inm != "" {
		if inm != "*" || len(ifMatch) > 0 {
			problem(w, http.StatusBadRequest, `to create a document send "If-None-Match: *" and no If-Match`, nil)
			return
		}
		if in.Title == nil || in.Body == nil || in.Policy == nil {
			problem(w, http.StatusUnprocessableEntity, "creating a document needs title, body and policy", nil)
			return
		}
		d, err := a.createDoc(r.Context(), p.User.Name, Document{ID: id, Title: *in.Title, Body: *in.Body, Policy: *in.Policy})
		var ce *conflictError
		if errors.As(err, &ce) {
			httpcc.WriteError(w, &httpcc.PreconditionError{Current: ce.Current.state(), Header: "If-None-Match"})
			return
		}
		if err != nil {
			a.writeErr(w, r, err)
			return
		}
		httpcc.SetValidators(w.Header(), d.state())
		w.Header().Set("Location", "/api/documents/"+d.ID)
		writeJSON(w, http.StatusCreated, d)
		return
	}
	if in.Policy != nil {
		problem(w, http.StatusUnprocessableEntity, "the policy of a document is fixed when it is created", nil)
		return
	}
	cur, err := a.getDoc(r.Context(), a.db, id)
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	token := r.Header.Get("Checkout-Token")
	if len(ifMatch) == 0 && cur.Policy == Optimistic {
		httpcc.WriteError(w, (httpcc.Policy{}).Require(r))
		return
	}
	if len(ifMatch) == 0 && cur.Policy == Pessimistic && token == "" {
		a.writeErr(w, r, a.requireCheckout(r, id))
		return
	}
	var expect int64
	if len(ifMatch) > 0 {
		if err := httpcc.Check(r, cur.state()); err != nil {
			httpcc.WriteError(w, err)
			return
		}
		// Check passed: the tag matches cur, unless it was "*".
		// "If-Match: *" overwrites whatever version is there, deliberately.
		expect = cur.Version
		if strings.TrimSpace(ifMatch[0]) == "*" {
			expect = 0
		}
	}
	d, err := a.saveDoc(r.Context(), p.User.Name, id, saveInput{Title: in.Title, Body: in.Body, Expect: expect, Token: token})
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	httpcc.SetValidators(w.Header(), d.state())
	writeJSON(w, http.StatusOK, d)
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

func (a *App) apiDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	cur, err := a.getDoc(r.Context(), a.db, id)
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	if err := (httpcc.Policy{}).Require(r); err != nil {
		httpcc.WriteError(w, err)
		return
	}
	if err := httpcc.Check(r, cur.state()); err != nil {
		httpcc.WriteError(w, err)
		return
	}
	p, _ := userOf(r)
	if err := a.deleteDoc(r.Context(), p.User.Name, id, cur.Version, r.Header.Get("Checkout-Token")); err != nil {
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
		problem(w, http.StatusNotFound, "the document is not checked out", nil)
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

func (a *App) apiHeartbeat(w http.ResponseWriter, r *http.Request) {
	d, ok := a.pessimisticDoc(w, r)
	if !ok {
		return
	}
	tok := checkoutToken(r)
	if tok == "" {
		problem(w, http.StatusBadRequest, "send the checkout token in the Checkout-Token header", nil)
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
	tok := checkoutToken(r)
	if tok == "" {
		problem(w, http.StatusBadRequest, "send the checkout token in the Checkout-Token header", nil)
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
		problem(w, http.StatusForbidden, "only an administrator can break a checkout", nil)
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
		problem(w, http.StatusNotFound, "the document is not checked out", nil)
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
