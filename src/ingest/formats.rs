//! Parsing Connect bodies (JSON SIM and legacy XML). Being written.
