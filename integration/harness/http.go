package harness

import (
	"maps"
	"net/http"
	"net/http/httptest"
)

// ServeThen serves r with h, runs then, and only then sends h's answer to
// w: what then does happens after the request took effect and before its
// client hears of it (another writer's PUT landing between ours and our
// read-back).
func ServeThen(h http.Handler, w http.ResponseWriter, r *http.Request, then func()) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	then()
	maps.Copy(w.Header(), rec.Header())
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}
