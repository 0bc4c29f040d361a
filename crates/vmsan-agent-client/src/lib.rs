//! vmsan-agent-client
