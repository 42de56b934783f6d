-- One database per service: each service owns its tables.
CREATE DATABASE account;
CREATE DATABASE provisioning;
CREATE DATABASE billing;
