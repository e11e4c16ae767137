package idempotency_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/haita/haita/idempotency"
)

func ExampleRunner_Do() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "idempotency")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	store, err := idempotency.NewSQLStore(db, idempotency.SQLOptions{})
	if err != nil {
		panic(err)
	}
	if err := store.CreateTable(ctx); err != nil {
		panic(err)
	}
	r, err := idempotency.New(store, idempotency.Options{})
	if err != nil {
		panic(err)
	}

	charge := func(ctx context.Context, c idempotency.Claim) ([]byte, error) {
		fmt.Println("charging the card")
		return []byte("charge ch_1"), nil
	}
	for range 2 {
		res, err := r.Do(ctx, "payment-42", "amount=10", charge)
		fmt.Printf("%s replayed=%v err=%v\n", res.Value, res.Replayed, err)
	}
	_, err = r.Do(ctx, "payment-42", "amount=99", charge)
	fmt.Println(errors.Is(err, idempotency.ErrMismatch))
	// Output:
	// charging the card
	// charge ch_1 replayed=false err=<nil>
	// charge ch_1 replayed=true err=<nil>
	// true
}

func ExampleMiddleware() {
	dir, _ := os.MkdirTemp("", "idempotency")
	defer os.RemoveAll(dir)
	db, _ := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_pragma=busy_timeout(5000)")
	defer db.Close()
	store, _ := idempotency.NewSQLStore(db, idempotency.SQLOptions{})
	if err := store.CreateTable(context.Background()); err != nil {
		panic(err)
	}
	r, _ := idempotency.New(store, idempotency.Options{})
	mw, err := idempotency.Middleware(r, idempotency.HTTPOptions{Required: true})
	if err != nil {
		panic(err)
	}
	n := 0
	srv := httptest.NewServer(mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "document %d\n", n)
	})))
	defer srv.Close()

	for range 2 { // a double click
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/documents", strings.NewReader("title=Hello"))
		req.Header.Set("Idempotency-Key", `"4f1c2e0a-9d7b-4c1e-8a51-2b7e3c9d0f16"`)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		res.Body.Close()
		fmt.Printf("%d replayed=%q\n", res.StatusCode, res.Header.Get("Idempotent-Replayed"))
	}
	fmt.Println("documents created:", n)
	// Output:
	// 201 replayed=""
	// 201 replayed="true"
	// documents created: 1
}
