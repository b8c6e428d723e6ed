//! embtune dashboards (to come).
