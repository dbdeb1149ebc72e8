//! The MQTT device gateway: a small, bounded MQTT broker on a `mio` event
//! loop (DESIGN: devices reach the chain over MQTT, no async runtime).
