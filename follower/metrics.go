package follower

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the follower's Prometheus metrics, labelled by database name.
// One Metrics serves every follower of a process.
type Metrics struct {
	TXID          *prometheus.GaugeVec
	HeadTXID      *prometheus.GaugeVec
	LagSeconds    *prometheus.GaugeVec
	LagTXIDs      *prometheus.GaugeVec
	ApplyDuration *prometheus.HistogramVec
	AppliedFiles  *prometheus.CounterVec
	AppliedPages  *prometheus.CounterVec
	Requests      *prometheus.CounterVec // by type (get, list) and result (ok, not_found, error)
	Checkpoints   *prometheus.CounterVec // by result (ok, busy, error)
	WALFrames     *prometheus.GaugeVec
	Healthy       *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	db := []string{"db"}
	m := &Metrics{
		TXID: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "understudy_follower_txid", Help: "TXID of the last change set applied to the local database.",
		}, db),
		HeadTXID: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "understudy_follower_head_txid", Help: "Newest TXID the follower knows the replica store holds (listed or applied).",
		}, db),
		LagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "understudy_follower_lag_seconds", Help: "Age of the newest applied commit while behind; 0 when the last poll found nothing newer.",
		}, db),
		LagTXIDs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "understudy_follower_lag_txids", Help: "TXIDs between the local position and the newest TXID known in the store.",
		}, db),
		ApplyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "understudy_follower_apply_duration_seconds",
			Help:    "Time to apply and verify one LTX file (download included).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12),
		}, db),
		AppliedFiles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_follower_applied_files_total", Help: "LTX files applied.",
		}, db),
		AppliedPages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_follower_applied_pages_total", Help: "Pages written by applied LTX files.",
		}, db),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_follower_store_requests_total", Help: "Requests to the replica store by type (get, list) and result.",
		}, []string{"db", "type", "result"}),
		Checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_follower_checkpoints_total", Help: "Follower WAL checkpoints by result (ok, busy, error).",
		}, []string{"db", "result"}),
		WALFrames: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "understudy_follower_wal_frames", Help: "Frames in the follower's WAL at the last checkpoint.",
		}, db),
		Healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "understudy_follower_healthy", Help: "1 while the follower can advance; 0 while it is stalled (a gap, a corrupt object, a store that does not answer) or stopped.",
		}, db),
	}
	if reg != nil {
		reg.MustRegister(m.TXID, m.HeadTXID, m.LagSeconds, m.LagTXIDs, m.ApplyDuration, m.AppliedFiles, m.AppliedPages,
			m.Requests, m.Checkpoints, m.WALFrames, m.Healthy)
	}
	return m
}
