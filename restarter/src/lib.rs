//! Service supervision. 
