package primary

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the collectors of one DB; vectors are shared by every DB
// registered with the same Registerer.
type metrics struct {
	txid          *prometheus.GaugeVec     // db, replica
	syncs         *prometheus.CounterVec   // db, replica
	syncErrors    *prometheus.CounterVec   // db, replica
	syncSeconds   *prometheus.HistogramVec // db
	storeBytes    *prometheus.CounterVec   // db, replica, op
	storeRequests *prometheus.CounterVec   // db, replica, op
	walBytes      *prometheus.GaugeVec     // db
	checkpoints   *prometheus.CounterVec   // db, mode
	writeHold     *prometheus.GaugeVec     // db: longest write-lock hold, seconds
	snapshots     *prometheus.CounterVec   // db, reason
	shadowBytes   *prometheus.GaugeVec     // db, kind (l0, image, snapshot)
	shadowDropped *prometheus.CounterVec   // db
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		txid: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "txid", Help: "Newest TXID present in the replica store."}, []string{"db", "replica"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "syncs_total", Help: "L0 files uploaded to the replica."}, []string{"db", "replica"}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "sync_errors_total", Help: "Failed uploads and store operations."}, []string{"db", "replica"}),
		syncSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "sync_duration_seconds", Help: "Time to read the WAL and write one L0 file locally.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"db"}),
		storeBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "store_bytes_total", Help: "Bytes sent to or read from the store by operation."}, []string{"db", "replica", "op"}),
		storeRequests: newStoreRequests(),
		walBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "wal_bytes", Help: "Size of the valid part of the WAL at the last sync."}, []string{"db"}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "checkpoints_total", Help: "Checkpoints run by mode."}, []string{"db", "mode"}),
		writeHold: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "write_hold_max_seconds", Help: "Longest time the application's writes were held by the shipper."}, []string{"db"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "snapshots_total", Help: "Full images written, by reason."}, []string{"db", "reason"}),
		shadowBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "shadow_bytes", Help: "Bytes of the files kept in the shadow directory until every replica has them, by kind (l0: the bounded L0 files, image: full images, snapshot)."},
			[]string{"db", "kind"}),
		shadowDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "understudy", Subsystem: "primary",
			Name: "shadow_dropped_files_total", Help: "L0 files dropped from the shadow directory because it passed its bound (max-shadow-size)."},
			[]string{"db"}),
	}
	if reg == nil {
		return m
	}
	m.txid = register(reg, m.txid)
	m.syncs = register(reg, m.syncs)
	m.syncErrors = register(reg, m.syncErrors)
	m.syncSeconds = register(reg, m.syncSeconds)
	m.storeBytes = register(reg, m.storeBytes)
	m.storeRequests = register(reg, m.storeRequests)
	m.walBytes = register(reg, m.walBytes)
	m.checkpoints = register(reg, m.checkpoints)
	m.writeHold = register(reg, m.writeHold)
	m.snapshots = register(reg, m.snapshots)
	m.shadowBytes = register(reg, m.shadowBytes)
	m.shadowDropped = register(reg, m.shadowDropped)
	return m
}

// register registers c, or returns the collector registered before under
// the same name (several DBs in one process share the vectors).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

func newStoreRequests() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "understudy", Subsystem: "primary",
		Name: "store_requests_total", Help: "Store requests by operation."}, []string{"db", "replica", "op"})
}

// StoreRequests is the store request counter (db, replica, op) the DBs
// registered with reg count into, for requests made beside them (a dir:
// entry's heads index), so that one series counts every request to a
// store. reg nil gives an unregistered counter.
func StoreRequests(reg prometheus.Registerer) *prometheus.CounterVec {
	if reg == nil {
		return newStoreRequests()
	}
	return register(reg, newStoreRequests())
}
