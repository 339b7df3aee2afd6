package main

import (
	"log/slog"

	"github.com/colibrivm/colibri/internal/exepages"
	"github.com/colibrivm/colibri/internal/logattr"
)

// releaseStartupPages gives back the pages of colibri's binary that
// starting up touched (internal/exepages), once the host and its VMs are
// set up: nearly all of a 17 MB binary's text and read-only data are
// resident by then, and what serving and running VMs need of them faults
// back in (docs/PERF.md, "VMM memory overhead").
func releaseStartupPages(log *slog.Logger) {
	n, err := exepages.ReleaseAll()
	if err != nil {
		log.Debug("start-up pages of the executable kept", logattr.Err(err))
		return
	}
	log.Debug("start-up pages of the executable released", "KiB", n>>10)
}
