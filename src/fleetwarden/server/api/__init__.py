"""HTTP routes: parse → service → serialize. No decisions live here."""
