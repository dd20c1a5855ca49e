//! Simulated payment gateways (test mode). Empty until card and Alipay payments land; `evisa
//! sandbox` says so and exits rather than pretend to run.
