//! embtune tuner (to come).
