package daemon

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"kmsagent/kmsclient"
)

// Metrics are the daemon's Prometheus metrics, in a registry of their own
// (no global registry: tests and several daemons in one process do not
// share counters).
type Metrics struct {
	Registry *prometheus.Registry
	unlocks  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	volumes  *prometheus.Desc
	d        *Daemon
}

// newMetrics registers the metrics of d, and the Go runtime's and
// process's.
func newMetrics(d *Daemon) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		unlocks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmsagent_unlocks_total",
			Help: "Mount attempts (KMS unwrap and unlock) by volume kind and result: ok, retry (throttled or unavailable), failed.",
		}, []string{"kind", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kmsagent_unlock_duration_seconds",
			Help:    "Time of one mount attempt: KMS unwrap plus unlock and mount, by volume kind and result.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"kind", "result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmsagent_errors_total",
			Help: "Failed mount attempts by error kind (kms_throttled, kms_unavailable, key_disabled, ...; the audit log's results).",
		}, []string{"kind"}),
		volumes: prometheus.NewDesc("kmsagent_volumes", "Configured volumes by state.", []string{"state"}, nil),
		d:       d,
	}
	// The volume gauge is read from the table at scrape time.
	m.Registry.MustRegister(m.unlocks, m.latency, m.errors, volumeCollector{m}, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) observe(kind Kind, took time.Duration, err error) {
	res := "ok"
	switch {
	case err == nil:
	case kmsclient.Retryable(err):
		res = "retry"
	default:
		res = "failed"
	}
	m.unlocks.WithLabelValues(string(kind), res).Inc()
	m.latency.WithLabelValues(string(kind), res).Observe(took.Seconds())
	if err != nil {
		m.errors.WithLabelValues(ErrorKind(err)).Inc()
	}
}

type volumeCollector struct{ m *Metrics }

func (c volumeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.volumes }

func (c volumeCollector) Collect(ch chan<- prometheus.Metric) {
	for state, n := range c.m.d.counts() {
		ch <- prometheus.MustNewConstMetric(c.m.volumes, prometheus.GaugeValue, float64(n), state)
	}
}
