//! embtune coordinator (to come).
