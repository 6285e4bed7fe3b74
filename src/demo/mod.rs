//! Data to try salespulse with: [`generator`], the seeded synthetic CRM
//! of the live demo and `salespulse generate`; [`maven`], the Maven
//! Analytics CRM sample (CSV) converted to CloudEvents
//! (`salespulse convert-maven`).

pub mod generator;
pub mod maven;
