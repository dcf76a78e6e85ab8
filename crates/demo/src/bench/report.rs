//! The bench report.
