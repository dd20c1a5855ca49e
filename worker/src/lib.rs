//! Background jobs of evisa-pay. Empty until the job queue lands with card payments; `evisa work`
//! says so and exits rather than pretend to run.
